-- The primary company of a mapped contacts row (a `[[sync.objects]]` mapping with
-- `company_column`) as crm-sync last synced it: the HubSpot company id both sides last agreed
-- on, kept on the row's own link so that it lives and dies with the link (deleting a link row
-- to lift a deletion mark forgets it too) and the user's table still gets no column. NULL: no
-- company agreed. Comparing it with the HubSpot id of the row's local company tells push what
-- changed locally, and with HubSpot's primary company what changed in HubSpot. Only the
-- association phases write it; the row phases' upserts leave it alone.
ALTER TABLE object_links ADD COLUMN company_hs_id TEXT;
