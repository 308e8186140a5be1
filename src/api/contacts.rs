//! `GET /contacts`: the local contacts, page by page (keyset pagination by id); and
//! `POST /api/contacts/{id}/restore`: a user's restore of a contact HubSpot deleted.

use chrono::{DateTime, Utc};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::registry::MetaSchema;
use poem_openapi::types::{ParseError, ParseFromParameter, ParseResult};
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::AppState;
use super::auth::ApiToken;
use super::error::{ApiError, ErrorBody, ErrorCode, ErrorDetail, Failure, NoInput, ParamInput};
use super::params::PageSize;
use super::params::inline_type;
use super::tags::ApiTags;
use crate::ids::ContactId;
use crate::store::{Contact, DeletedFilter, Restore, Tombstone};

/// Page size when the request names none.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page a request may ask for.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// The `limit` parameter of `GET /contacts`.
type Limit = PageSize<DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE>;

/// A local contact.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Contact")]
pub struct ContactView {
    /// Local id.
    pub id: i64,
    /// Trimmed and lower-case; null when the contact has no email.
    #[oai(nullable)]
    pub email: Option<String>,
    /// Given name; null when unknown.
    #[oai(nullable)]
    pub first_name: Option<String>,
    /// Family name; null when unknown.
    #[oai(nullable)]
    pub last_name: Option<String>,
    /// The HubSpot record id, once the contact is linked; null before.
    #[oai(nullable)]
    pub hs_object_id: Option<String>,
    /// When the row was inserted.
    pub created_at: DateTime<Utc>,
    /// When the row last changed.
    pub updated_at: DateTime<Utc>,
    /// Set when HubSpot deleted the contact: push never creates it again until a user restores
    /// it (`POST /api/contacts/{id}/restore`); null otherwise.
    #[oai(nullable)]
    pub hubspot_deleted: Option<HubSpotDeletedView>,
}

/// The mark of a contact HubSpot deleted.
#[derive(Debug, Clone, Object)]
#[oai(rename = "HubSpotDeleted")]
pub struct HubSpotDeletedView {
    /// When crm-sync learnt of the deletion.
    pub at: DateTime<Utc>,
    /// `deleted`, `privacy_deletion`, `merged_away_without_survivor` or `archived`.
    pub reason: String,
    /// The HubSpot record that was deleted; null when unknown.
    #[oai(nullable)]
    pub hs_object_id: Option<String>,
}

impl From<Tombstone> for HubSpotDeletedView {
    fn from(t: Tombstone) -> Self {
        Self {
            at: t.at,
            reason: t.reason.as_str().to_owned(),
            hs_object_id: t.hs_object_id.map(|h| h.0),
        }
    }
}

impl From<Contact> for ContactView {
    fn from(c: Contact) -> Self {
        Self {
            id: c.id.0,
            email: c.email,
            first_name: c.first_name,
            last_name: c.last_name,
            hs_object_id: c.hs_object_id.map(|h| h.0),
            created_at: c.created_at,
            updated_at: c.updated_at,
            hubspot_deleted: c.hubspot_deleted.map(HubSpotDeletedView::from),
        }
    }
}

/// One page of contacts.
#[derive(Debug, Object)]
pub struct ContactPage {
    /// The contacts of this page, by ascending id.
    pub results: Vec<ContactView>,
    /// Where the next page starts; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub paging: Option<Paging>,
}

/// Paging information of a page that is not the last.
#[derive(Debug, Object)]
pub struct Paging {
    /// The next page.
    pub next: NextPage,
}

/// How to ask for the next page.
#[derive(Debug, Object)]
pub struct NextPage {
    /// Pass as `after` to get the next page. Opaque: its form may change.
    pub after: String,
}

/// The `after` cursor: opaque to clients, today the last id of the previous page in decimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(pub(super) ContactId);

impl Cursor {
    /// The cursor that continues after `id`.
    pub fn after(id: ContactId) -> Self {
        Self(id)
    }

    /// The wire form.
    pub fn encode(self) -> String {
        self.0.0.to_string()
    }

    /// Reads a cursor from the wire; `None` for an empty one (the first page). Only what
    /// `encode` produces is accepted: digits, no sign, no spaces. A number beyond every
    /// possible id continues after the last contact (an empty page).
    pub fn decode(raw: &str) -> Result<Option<Cursor>, &'static str> {
        if raw.is_empty() {
            return Ok(None);
        }
        if !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(
                "not a valid cursor; pass the `paging.next.after` value of the previous page unchanged",
            );
        }
        let id = raw.parse::<i64>().unwrap_or(i64::MAX);
        Ok(Some(Cursor(ContactId(id))))
    }
}

/// The `after` parameter: where a page starts (empty: the first page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct After(pub(super) Option<Cursor>);

inline_type!(After, "cursor", || {
    let mut schema = MetaSchema::new("string");
    schema.pattern = Some("^[0-9]*$".to_owned());
    schema
});

impl ParseFromParameter for After {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Cursor::decode(value).map(After).map_err(ParseError::custom)
    }
}

/// The answer to `POST /api/contacts/{id}/restore`.
#[derive(ApiResponse)]
pub enum RestoreAnswer {
    /// The contact, no longer marked deleted.
    #[oai(status = 200)]
    Restored(Json<Box<ContactView>>),
    /// No contact has this id (code `not_found`).
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The contact is not marked deleted (code `conflict`).
    #[oai(status = 409)]
    NotDeleted(Json<ErrorBody>),
}

/// Routes that read contacts; every operation takes [`ApiToken`] first.
pub struct ContactsApi {
    pub(super) state: AppState,
}

#[OpenApi(tag = "ApiTags::Contacts")]
impl ContactsApi {
    /// List local contacts by ascending id, one page at a time.
    ///
    /// Follow `paging.next.after` until a page comes without `paging`.
    #[oai(path = "/contacts", method = "get", operation_id = "listContacts")]
    async fn list_contacts(
        &self,
        _auth: ApiToken,
        /// Page size, 1 to 1000 (default 100).
        limit: Query<Option<Limit>>,
        /// The `paging.next.after` value of the previous page; omit it for the first page.
        after: Query<Option<After>>,
        /// `true`: only contacts HubSpot deleted; `false`: only the others; omitted: all.
        hubspot_deleted: Query<Option<bool>>,
    ) -> Result<Json<ContactPage>, Failure<ParamInput>> {
        let after = after.0.and_then(|a| a.0);
        let filter = match hubspot_deleted.0 {
            None => DeletedFilter::Any,
            Some(true) => DeletedFilter::OnlyDeleted,
            Some(false) => DeletedFilter::NotDeleted,
        };
        let page = self.page(after, Limit::or_default(limit.0), filter).await?;
        Ok(Json(page))
    }

    /// Restore a contact HubSpot deleted: its mark is removed, so the next push may create it
    /// in HubSpot again.
    ///
    /// 404 when no contact has this id; 409 when the contact is not marked deleted.
    #[oai(
        path = "/api/contacts/:id/restore",
        method = "post",
        operation_id = "restoreContact"
    )]
    async fn restore_contact(
        &self,
        _auth: ApiToken,
        /// The local contact id.
        id: Path<String>,
    ) -> Result<RestoreAnswer, Failure<NoInput>> {
        let Ok(contact_id) = id.0.trim().parse::<i64>() else {
            return Ok(RestoreAnswer::NotFound(no_such_contact(&id.0)));
        };
        let restored = self
            .state
            .store
            .restore_contact(ContactId(contact_id))
            .await
            .map_err(|e| ApiError::from_store("restoring a contact failed", &e))?;
        Ok(match restored {
            Restore::Restored(contact) => {
                RestoreAnswer::Restored(Json(Box::new(ContactView::from(contact))))
            }
            Restore::NotTombstoned(_) => RestoreAnswer::NotDeleted(error_body(
                ErrorCode::Conflict,
                format!(
                    "contact {contact_id} is not marked deleted in HubSpot; nothing to restore"
                ),
            )),
            Restore::Unknown => RestoreAnswer::NotFound(no_such_contact(&id.0)),
        })
    }
}

fn error_body(code: ErrorCode, message: String) -> Json<ErrorBody> {
    Json(ErrorBody {
        error: ErrorDetail { code, message },
    })
}

/// The 404 of an unknown contact id.
fn no_such_contact(raw: &str) -> Json<ErrorBody> {
    error_body(ErrorCode::NotFound, format!("no contact with id {raw:?}"))
}

impl ContactsApi {
    /// Reads one row more than asked, so a full last page gets no `next`.
    async fn page(
        &self,
        after: Option<Cursor>,
        limit: u32,
        filter: DeletedFilter,
    ) -> Result<ContactPage, ApiError> {
        let limit = limit.clamp(1, MAX_PAGE_SIZE);
        let mut rows = self
            .state
            .store
            .list_contacts_where(after.map(|c| c.0), limit + 1, filter)
            .await
            .map_err(|e| ApiError::from_store("listing contacts failed", &e))?;
        let has_more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let paging = match rows.last() {
            Some(last) if has_more => Some(Paging {
                next: NextPage {
                    after: Cursor::after(last.id).encode(),
                },
            }),
            _ => None,
        };
        Ok(ContactPage {
            results: rows.into_iter().map(ContactView::from).collect(),
            paging,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_what_it_wrote() {
        let c = Cursor::after(ContactId(4711));
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), Some(c));
        assert_eq!(Cursor::decode("").unwrap(), None);
    }

    #[test]
    fn a_malformed_cursor_says_where_a_valid_one_comes_from() {
        for raw in ["abc", "-1", "+1", " 1", "1.5"] {
            let err = Cursor::decode(raw).unwrap_err();
            assert!(err.contains("paging.next.after"), "{raw}");
        }
    }

    #[test]
    fn a_cursor_beyond_every_id_continues_after_the_last_contact() {
        assert_eq!(
            Cursor::decode("99999999999999999999").unwrap(),
            Some(Cursor::after(ContactId(i64::MAX)))
        );
    }
}
