-- What a pending webhook read is about: a HubSpot contact to read ('contact', every row so
-- far), a company to read ('company'), or a contact whose company associations to read
-- ('contact_associations'). HubSpot ids are unique per object type only, so the object is
-- part of the key: a contact and a company with the same id are two pending reads, never one.
ALTER TABLE public.webhook_pulls ADD COLUMN object TEXT NOT NULL DEFAULT 'contact'
    CHECK (object IN ('contact', 'company', 'contact_associations'));
ALTER TABLE public.webhook_pulls DROP CONSTRAINT webhook_pulls_pkey;
ALTER TABLE public.webhook_pulls ADD PRIMARY KEY (object, hs_object_id);
