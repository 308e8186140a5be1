//! `GET /companies`: crm-sync's own companies, page by page (keyset pagination by id), with
//! the same auth, paging shape and cursor as `GET /contacts`.

use chrono::{DateTime, Utc};
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::AppState;
use super::auth::ApiToken;
use super::contacts::{After, HubSpotDeletedView, NextPage, Paging};
use super::error::{ApiError, Failure, ParamInput};
use super::params::PageSize;
use super::tags::ApiTags;
use crate::ids::LocalCompanyId;
use crate::store::LocalCompany;

/// Page size when the request names none.
const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page a request may ask for.
const MAX_PAGE_SIZE: u32 = 1000;

/// The `limit` parameter of `GET /companies`.
type Limit = PageSize<DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE>;

/// A local company.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Company")]
pub struct CompanyView {
    /// Local id.
    pub id: i64,
    /// The company's name; null when unknown.
    #[oai(nullable)]
    pub name: Option<String>,
    /// Its web domain, trimmed and lower-case; not unique; null when unknown.
    #[oai(nullable)]
    pub domain: Option<String>,
    /// The HubSpot company id, once linked; null before.
    #[oai(nullable)]
    pub hs_object_id: Option<String>,
    /// When the row was inserted.
    pub created_at: DateTime<Utc>,
    /// When the row last changed.
    pub updated_at: DateTime<Utc>,
    /// Set when HubSpot deleted the company: push never creates it again; null otherwise.
    #[oai(nullable)]
    pub hubspot_deleted: Option<HubSpotDeletedView>,
}

impl From<LocalCompany> for CompanyView {
    fn from(c: LocalCompany) -> Self {
        Self {
            id: c.id.0,
            name: c.name,
            domain: c.domain,
            hs_object_id: c.hs_object_id.map(|h| h.0),
            created_at: c.created_at,
            updated_at: c.updated_at,
            hubspot_deleted: c.hubspot_deleted.map(HubSpotDeletedView::from),
        }
    }
}

/// One page of companies.
#[derive(Debug, Object)]
pub struct CompanyPage {
    /// The companies of this page, by ascending id.
    pub results: Vec<CompanyView>,
    /// Where the next page starts; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub paging: Option<Paging>,
}

/// Routes that read companies; every operation takes [`ApiToken`] first.
pub struct CompaniesApi {
    pub(super) state: AppState,
}

#[OpenApi(tag = "ApiTags::Companies")]
impl CompaniesApi {
    /// List local companies by ascending id, one page at a time.
    ///
    /// Follow `paging.next.after` until a page comes without `paging`.
    #[oai(path = "/companies", method = "get", operation_id = "listCompanies")]
    async fn list_companies(
        &self,
        _auth: ApiToken,
        /// Page size, 1 to 1000 (default 100).
        limit: Query<Option<Limit>>,
        /// The `paging.next.after` value of the previous page; omit it for the first page.
        after: Query<Option<After>>,
    ) -> Result<Json<CompanyPage>, Failure<ParamInput>> {
        let after = after.0.and_then(|a| a.0).map(|c| LocalCompanyId(c.0.0));
        let limit = Limit::or_default(limit.0).clamp(1, MAX_PAGE_SIZE);
        let mut rows = self
            .state
            .store
            .list_companies(after, limit + 1)
            .await
            .map_err(|e| ApiError::from_store("listing companies failed", &e))?;
        let has_more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let paging = match rows.last() {
            Some(last) if has_more => Some(Paging {
                next: NextPage {
                    after: last.id.0.to_string(),
                },
            }),
            _ => None,
        };
        Ok(Json(CompanyPage {
            results: rows.into_iter().map(CompanyView::from).collect(),
            paging,
        }))
    }
}
