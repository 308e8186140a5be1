-- When a local company's link moves to another HubSpot company (a merge's survivor, or the
-- record that carries the company's external key after the old one was deleted), the
-- association state synced with the old id follows it (`Tx::link_companies`): found by the
-- HubSpot company id.
CREATE INDEX contact_company_links_company ON public.contact_company_links (hs_company_id);
CREATE INDEX object_links_company_hs_id ON public.object_links (company_hs_id)
    WHERE company_hs_id IS NOT NULL;
