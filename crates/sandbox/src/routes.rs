//! Which operation a method and path name: HubSpot's own paths, the OAuth pages and the
//! sandbox's admin paths (under their own prefix, never mixed with HubSpot's).

use poem::http::Method;

use super::objects::CrmObject;

/// The prefix of the admin endpoints.
pub(crate) const ADMIN_PREFIX: &str = "/_sandbox";

/// Where the CRM v3 record paths start: v3 and the date-versioned successor.
const OBJECT_PREFIXES: [&str; 2] = ["/crm/v3/objects/", "/crm/objects/2026-03/"];

/// Where the v4 association paths start: batch calls, and calls on one record.
const ASSOCIATION_BATCH_PREFIXES: [&str; 2] =
    ["/crm/v4/associations/", "/crm/associations/2026-03/"];
const ASSOCIATION_RECORD_PREFIXES: [&str; 2] = ["/crm/v4/objects/", "/crm/objects/2026-03/"];

/// An operation on the records of one object type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecordOp {
    /// `GET /{objects}`
    List,
    /// `POST /{objects}`
    Create,
    /// `GET /{objects}/{id}`
    Get(String),
    /// `PATCH /{objects}/{id}`
    Update(String),
    /// `DELETE /{objects}/{id}`
    Archive(String),
    /// `POST /{objects}/batch/read`
    BatchRead,
    /// `POST /{objects}/batch/create`
    BatchCreate,
    /// `POST /{objects}/batch/update`
    BatchUpdate,
    /// `POST /{objects}/batch/upsert`
    BatchUpsert,
    /// `POST /{objects}/batch/archive`
    BatchArchive,
    /// `POST /{objects}/search`
    Search,
    /// `POST /{objects}/merge`
    Merge,
    /// `POST /contacts/gdpr-delete` (contacts only)
    GdprDelete,
}

/// An operation of the properties API of one object type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PropertyOp {
    /// `GET /crm/v3/properties/{objects}`
    List,
    /// `POST /crm/v3/properties/{objects}`
    Create,
    /// `GET /crm/v3/properties/{objects}/{name}`
    Get(String),
    /// `PATCH /crm/v3/properties/{objects}/{name}`
    Update(String),
    /// `DELETE /crm/v3/properties/{objects}/{name}`
    Archive(String),
    /// `GET /crm/v3/properties/{objects}/groups`
    ListGroups,
    /// `POST /crm/v3/properties/{objects}/groups`
    CreateGroup,
    /// `GET /crm/v3/properties/{objects}/groups/{name}`
    GetGroup(String),
}

/// An operation of the v4 associations API, between two object types (the handlers refuse
/// pairs the sandbox does not model).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AssocOp {
    /// `POST /crm/v4/associations/{from}/{to}/batch/associate/default`
    BatchDefault,
    /// `POST .../batch/create`
    BatchCreate,
    /// `POST .../batch/read`
    BatchRead,
    /// `POST .../batch/archive`
    BatchArchive,
    /// `POST .../batch/labels/archive`
    BatchArchiveLabels,
    /// `PUT /crm/v4/objects/{from}/{id}/associations/default/{to}/{toId}`
    PutDefault(String, String),
    /// `PUT /crm/v4/objects/{from}/{id}/associations/{to}/{toId}` with types
    PutLabels(String, String),
    /// `DELETE /crm/v4/objects/{from}/{id}/associations/{to}/{toId}`
    DeletePair(String, String),
    /// `GET /crm/v4/objects/{from}/{id}/associations/{to}`
    List(String),
}

/// A CRM operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ApiOp {
    /// Records of contacts or companies.
    Records(CrmObject, RecordOp),
    /// Property definitions and groups of contacts or companies.
    Properties(CrmObject, PropertyOp),
    /// Associations from one object type to another.
    Associations {
        /// The `from` side.
        from: CrmObject,
        /// The `to` side.
        to: CrmObject,
        /// What to do.
        op: AssocOp,
    },
    /// `GET /account-info/v3/details`
    AccountDetails,
    /// `GET /account-info/v3/api-usage/daily/private-apps`
    DailyUsage,
}

/// Which rate budget a request spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bucket {
    /// The rolling 10-second budget of the app.
    General,
    /// The per-second search budget of the token.
    Search,
    /// The associations API's own 10-second budget (its batch calls: the spec exempts those
    /// from the general one, and not the calls on one record).
    Associations,
}

/// How an operation counts for limits and faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// Reads.
    Read,
    /// Create, update, upsert, archive, merge, delete: may be dropped after applying.
    Write,
    /// Counts against the search limit only.
    Search,
}

impl ApiOp {
    /// Its kind.
    pub(crate) fn kind(&self) -> OpKind {
        match self {
            Self::Records(_, RecordOp::Search) => OpKind::Search,
            Self::Records(
                _,
                RecordOp::Create
                | RecordOp::Update(_)
                | RecordOp::Archive(_)
                | RecordOp::BatchCreate
                | RecordOp::BatchUpdate
                | RecordOp::BatchUpsert
                | RecordOp::BatchArchive
                | RecordOp::Merge
                | RecordOp::GdprDelete,
            ) => OpKind::Write,
            Self::Associations { op, .. } if op.is_write() => OpKind::Write,
            _ => OpKind::Read,
        }
    }

    /// The budget it spends.
    pub(crate) fn bucket(&self) -> Bucket {
        match self {
            Self::Records(_, RecordOp::Search) => Bucket::Search,
            Self::Associations { op, .. } if op.is_batch() => Bucket::Associations,
            _ => Bucket::General,
        }
    }

    /// Whether it may change property definitions or groups.
    fn changes_schema(&self) -> bool {
        matches!(
            self,
            Self::Properties(
                _,
                PropertyOp::Create
                    | PropertyOp::Update(_)
                    | PropertyOp::Archive(_)
                    | PropertyOp::CreateGroup
            )
        )
    }

    /// The scopes an OAuth token needs one of (private-app tokens have all).
    pub(crate) fn required_scopes(&self) -> Vec<&'static str> {
        match self {
            Self::Properties(object, _) if self.changes_schema() => {
                vec![object.schema_write_scope()]
            }
            Self::Properties(object, _) => vec![object.schema_read_scope()],
            Self::Records(object, _) if self.kind() == OpKind::Write => vec![object.write_scope()],
            Self::Records(object, _) => vec![object.read_scope()],
            // No scope of its own: the object scopes of either side do.
            Self::Associations { from, to, .. } if self.kind() == OpKind::Write => {
                vec![from.write_scope(), to.write_scope()]
            }
            Self::Associations { from, to, .. } => vec![
                from.read_scope(),
                to.read_scope(),
                from.write_scope(),
                to.write_scope(),
            ],
            Self::AccountDetails | Self::DailyUsage => vec!["oauth"],
        }
    }

    /// A short stable name for counters.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Records(CrmObject::Contacts, op) => contact_op_name(op),
            Self::Records(CrmObject::Companies, op) => company_op_name(op),
            Self::Properties(CrmObject::Contacts, op) => property_op_name(op),
            Self::Properties(CrmObject::Companies, op) => company_property_op_name(op),
            Self::Associations { op, .. } => op.name(),
            Self::AccountDetails => "account.details",
            Self::DailyUsage => "account.daily_usage",
        }
    }
}

impl AssocOp {
    fn is_batch(&self) -> bool {
        !matches!(
            self,
            Self::PutDefault(..) | Self::PutLabels(..) | Self::DeletePair(..) | Self::List(_)
        )
    }

    fn is_write(&self) -> bool {
        !matches!(self, Self::BatchRead | Self::List(_))
    }

    fn name(&self) -> &'static str {
        match self {
            Self::BatchDefault => "associations.batch_associate_default",
            Self::BatchCreate => "associations.batch_create",
            Self::BatchRead => "associations.batch_read",
            Self::BatchArchive => "associations.batch_archive",
            Self::BatchArchiveLabels => "associations.batch_archive_labels",
            Self::PutDefault(..) => "associations.put_default",
            Self::PutLabels(..) => "associations.put_labels",
            Self::DeletePair(..) => "associations.delete",
            Self::List(_) => "associations.list",
        }
    }
}

fn contact_op_name(op: &RecordOp) -> &'static str {
    match op {
        RecordOp::List => "contacts.list",
        RecordOp::Create => "contacts.create",
        RecordOp::Get(_) => "contacts.get",
        RecordOp::Update(_) => "contacts.update",
        RecordOp::Archive(_) => "contacts.archive",
        RecordOp::BatchRead => "contacts.batch_read",
        RecordOp::BatchCreate => "contacts.batch_create",
        RecordOp::BatchUpdate => "contacts.batch_update",
        RecordOp::BatchUpsert => "contacts.batch_upsert",
        RecordOp::BatchArchive => "contacts.batch_archive",
        RecordOp::Search => "contacts.search",
        RecordOp::Merge => "contacts.merge",
        RecordOp::GdprDelete => "contacts.gdpr_delete",
    }
}

fn company_op_name(op: &RecordOp) -> &'static str {
    match op {
        RecordOp::List => "companies.list",
        RecordOp::Create => "companies.create",
        RecordOp::Get(_) => "companies.get",
        RecordOp::Update(_) => "companies.update",
        RecordOp::Archive(_) => "companies.archive",
        RecordOp::BatchRead => "companies.batch_read",
        RecordOp::BatchCreate => "companies.batch_create",
        RecordOp::BatchUpdate => "companies.batch_update",
        RecordOp::BatchUpsert => "companies.batch_upsert",
        RecordOp::BatchArchive => "companies.batch_archive",
        RecordOp::Search => "companies.search",
        RecordOp::Merge => "companies.merge",
        RecordOp::GdprDelete => "companies.gdpr_delete",
    }
}

fn property_op_name(op: &PropertyOp) -> &'static str {
    match op {
        PropertyOp::List => "properties.list",
        PropertyOp::Create => "properties.create",
        PropertyOp::Get(_) => "properties.get",
        PropertyOp::Update(_) => "properties.update",
        PropertyOp::Archive(_) => "properties.archive",
        PropertyOp::ListGroups => "properties.list_groups",
        PropertyOp::CreateGroup => "properties.create_group",
        PropertyOp::GetGroup(_) => "properties.get_group",
    }
}

fn company_property_op_name(op: &PropertyOp) -> &'static str {
    match op {
        PropertyOp::List => "company_properties.list",
        PropertyOp::Create => "company_properties.create",
        PropertyOp::Get(_) => "company_properties.get",
        PropertyOp::Update(_) => "company_properties.update",
        PropertyOp::Archive(_) => "company_properties.archive",
        PropertyOp::ListGroups => "company_properties.list_groups",
        PropertyOp::CreateGroup => "company_properties.create_group",
        PropertyOp::GetGroup(_) => "company_properties.get_group",
    }
}

/// An OAuth operation (exempt from limits and faults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OAuthOp {
    /// The authorize page.
    Authorize,
    /// Token exchange and refresh.
    Token,
    /// v3 / 2026-03 introspection.
    Introspect,
    /// v3 / 2026-03 revocation.
    Revoke,
    /// v1 access-token metadata.
    AccessTokenInfo(String),
    /// v1 refresh-token metadata.
    RefreshTokenInfo(String),
    /// v1 refresh-token deletion.
    DeleteRefreshToken(String),
}

/// An admin operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AdminOp {
    /// `GET /_sandbox/stats`
    Stats,
    /// `GET /_sandbox/contacts`
    Dump,
    /// `POST /_sandbox/contacts`
    Insert,
    /// `POST /_sandbox/seed`
    Seed,
    /// `POST /_sandbox/reset`
    Reset,
    /// `POST /_sandbox/expire-tokens`
    ExpireTokens,
    /// `POST /_sandbox/flush-search`
    FlushSearch,
    /// `GET /_sandbox/config`
    GetConfig,
    /// `PUT|PATCH /_sandbox/config`
    SetConfig,
    /// `GET /_sandbox/companies`
    DumpCompanies,
    /// `POST /_sandbox/companies`
    InsertCompanies,
    /// `GET /_sandbox/associations`
    DumpAssociations,
    /// `GET /_sandbox/config/companies`
    GetCompanyConfig,
    /// `PUT|PATCH /_sandbox/config/companies`
    SetCompanyConfig,
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// HubSpot's CRM and account APIs.
    Api(ApiOp),
    /// HubSpot's OAuth.
    OAuth(OAuthOp),
    /// The sandbox's own admin.
    Admin(AdminOp),
    /// A known path with another method.
    MethodNotAllowed,
    /// Nothing here.
    NotFound,
}

impl Target {
    /// Whether serving it may change what the state file keeps: contacts, properties, issued
    /// codes and tokens, the variants. Reads, searches and stats never do.
    pub(crate) fn may_change_state(&self) -> bool {
        match self {
            Self::Api(op) => op.kind() == OpKind::Write || op.changes_schema(),
            Self::OAuth(op) => matches!(
                op,
                OAuthOp::Authorize
                    | OAuthOp::Token
                    | OAuthOp::Revoke
                    | OAuthOp::DeleteRefreshToken(_)
            ),
            Self::Admin(op) => matches!(
                op,
                AdminOp::Insert
                    | AdminOp::Seed
                    | AdminOp::Reset
                    | AdminOp::ExpireTokens
                    | AdminOp::SetConfig
                    | AdminOp::InsertCompanies
                    | AdminOp::SetCompanyConfig
            ),
            Self::MethodNotAllowed | Self::NotFound => false,
        }
    }
}

/// Routes a request.
pub(crate) fn route(method: &Method, path: &str) -> Target {
    let path = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    if let Some(rest) = path.strip_prefix(ADMIN_PREFIX) {
        return admin(method, rest);
    }
    if let Some(rest) = path.strip_prefix("/oauth") {
        return oauth(method, rest);
    }
    if let Some(target) = crm(method, path) {
        return target;
    }
    match path {
        "/account-info/v3/details" => only(method, Method::GET, ApiOp::AccountDetails),
        "/account-info/v3/api-usage/daily/private-apps" => {
            only(method, Method::GET, ApiOp::DailyUsage)
        }
        _ => Target::NotFound,
    }
}

fn only(method: &Method, expected: Method, op: ApiOp) -> Target {
    if *method == expected {
        Target::Api(op)
    } else {
        Target::MethodNotAllowed
    }
}

/// CRM records, properties and associations; `None` when the path is none of theirs.
fn crm(method: &Method, path: &str) -> Option<Target> {
    if let Some(rest) = path.strip_prefix("/crm/v3/properties/") {
        let (object, rest) = split_object(rest)?;
        return Some(properties(method, object, rest));
    }
    for prefix in ASSOCIATION_BATCH_PREFIXES {
        if let Some(rest) = path.strip_prefix(prefix) {
            return association_batch(method, rest);
        }
    }
    for prefix in ASSOCIATION_RECORD_PREFIXES {
        if let Some(rest) = path.strip_prefix(prefix)
            && let Some(target) = association_of_record(method, rest)
        {
            return Some(target);
        }
    }
    for prefix in OBJECT_PREFIXES {
        if let Some(rest) = path.strip_prefix(prefix) {
            let (object, rest) = split_object(rest)?;
            // Companies take no GDPR delete: only contacts are people.
            return Some(records(method, object, rest));
        }
    }
    None
}

/// `companies/batch/read` → (companies, `/batch/read`); only plural names and type ids
/// name objects in v3 paths.
fn split_object(rest: &str) -> Option<(CrmObject, &str)> {
    let (name, tail) = rest.split_once('/').map_or((rest, ""), |(n, t)| (n, t));
    let object = CrmObject::from_path(name).filter(|o| name != o.singular())?;
    Some((object, tail))
}

fn segments(rest: &str) -> Vec<&str> {
    rest.split('/').filter(|s| !s.is_empty()).collect()
}

fn records(method: &Method, object: CrmObject, rest: &str) -> Target {
    let post = |op| only(method, Method::POST, ApiOp::Records(object, op));
    match segments(rest).as_slice() {
        [] if *method == Method::GET => Target::Api(ApiOp::Records(object, RecordOp::List)),
        [] => post(RecordOp::Create),
        ["batch", "read"] => post(RecordOp::BatchRead),
        ["batch", "create"] => post(RecordOp::BatchCreate),
        ["batch", "update"] => post(RecordOp::BatchUpdate),
        ["batch", "upsert"] => post(RecordOp::BatchUpsert),
        ["batch", "archive"] => post(RecordOp::BatchArchive),
        ["search"] => post(RecordOp::Search),
        ["merge"] => post(RecordOp::Merge),
        ["gdpr-delete"] if object == CrmObject::Contacts => post(RecordOp::GdprDelete),
        [id] => {
            let id = decode(id);
            let op = match *method {
                Method::GET => RecordOp::Get(id),
                Method::PATCH => RecordOp::Update(id),
                Method::DELETE => RecordOp::Archive(id),
                _ => return Target::MethodNotAllowed,
            };
            Target::Api(ApiOp::Records(object, op))
        }
        _ => Target::NotFound,
    }
}

fn properties(method: &Method, object: CrmObject, rest: &str) -> Target {
    let api = |op| Target::Api(ApiOp::Properties(object, op));
    match segments(rest).as_slice() {
        [] if *method == Method::GET => api(PropertyOp::List),
        [] => only(
            method,
            Method::POST,
            ApiOp::Properties(object, PropertyOp::Create),
        ),
        ["groups"] if *method == Method::GET => api(PropertyOp::ListGroups),
        ["groups"] => only(
            method,
            Method::POST,
            ApiOp::Properties(object, PropertyOp::CreateGroup),
        ),
        ["groups", name] => only(
            method,
            Method::GET,
            ApiOp::Properties(object, PropertyOp::GetGroup(decode(name))),
        ),
        [name] => {
            let name = decode(name);
            match *method {
                Method::GET => api(PropertyOp::Get(name)),
                Method::PATCH => api(PropertyOp::Update(name)),
                Method::DELETE => api(PropertyOp::Archive(name)),
                _ => Target::MethodNotAllowed,
            }
        }
        _ => Target::NotFound,
    }
}

/// `{from}/{to}/batch/...`
fn association_batch(method: &Method, rest: &str) -> Option<Target> {
    let parts = segments(rest);
    let [from, to, "batch", tail @ ..] = parts.as_slice() else {
        return Some(Target::NotFound);
    };
    let (Some(from), Some(to)) = (CrmObject::from_path(from), CrmObject::from_path(to)) else {
        return Some(Target::NotFound);
    };
    let op = match tail {
        ["associate", "default"] => AssocOp::BatchDefault,
        ["create"] => AssocOp::BatchCreate,
        ["read"] => AssocOp::BatchRead,
        ["archive"] => AssocOp::BatchArchive,
        ["labels", "archive"] => AssocOp::BatchArchiveLabels,
        _ => return Some(Target::NotFound),
    };
    Some(only(
        method,
        Method::POST,
        ApiOp::Associations { from, to, op },
    ))
}

/// `{from}/{id}/associations/...`; `None` when the path has no `associations` segment (then
/// it is a record path of the date-versioned API).
fn association_of_record(method: &Method, rest: &str) -> Option<Target> {
    let parts = segments(rest);
    let [from, id, "associations", tail @ ..] = parts.as_slice() else {
        return None;
    };
    let from = CrmObject::from_path(from)?;
    let id = decode(id);
    let api = |to: &str, op| match CrmObject::from_path(to) {
        Some(to) => Target::Api(ApiOp::Associations { from, to, op }),
        None => Target::NotFound,
    };
    Some(match (tail, method.as_str()) {
        (["default", to, to_id], "PUT") => api(to, AssocOp::PutDefault(id, decode(to_id))),
        ([to, to_id], "PUT") => api(to, AssocOp::PutLabels(id, decode(to_id))),
        ([to, to_id], "DELETE") => api(to, AssocOp::DeletePair(id, decode(to_id))),
        ([to], "GET") => api(to, AssocOp::List(id)),
        (["default", _, _] | [_, _] | [_], _) => Target::MethodNotAllowed,
        _ => Target::NotFound,
    })
}

fn oauth(method: &Method, rest: &str) -> Target {
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let post = |op| {
        if *method == Method::POST {
            Target::OAuth(op)
        } else {
            Target::MethodNotAllowed
        }
    };
    match segments.as_slice() {
        ["authorize"] | [_, "authorize"] if *method == Method::GET => {
            Target::OAuth(OAuthOp::Authorize)
        }
        ["v1" | "v3" | "2026-03", "token"] => post(OAuthOp::Token),
        ["v3" | "2026-03", "token", "introspect"] => post(OAuthOp::Introspect),
        ["v3" | "2026-03", "token", "revoke"] => post(OAuthOp::Revoke),
        ["v1", "access-tokens", token] if *method == Method::GET => {
            Target::OAuth(OAuthOp::AccessTokenInfo(decode(token)))
        }
        ["v1", "refresh-tokens", token] => match *method {
            Method::GET => Target::OAuth(OAuthOp::RefreshTokenInfo(decode(token))),
            Method::DELETE => Target::OAuth(OAuthOp::DeleteRefreshToken(decode(token))),
            _ => Target::MethodNotAllowed,
        },
        _ => Target::NotFound,
    }
}

fn admin(method: &Method, rest: &str) -> Target {
    let op = match (method.as_str(), rest) {
        ("GET", "/stats") => AdminOp::Stats,
        ("GET", "/contacts") => AdminOp::Dump,
        ("POST", "/contacts") => AdminOp::Insert,
        ("POST", "/seed") => AdminOp::Seed,
        ("POST", "/reset") => AdminOp::Reset,
        ("POST", "/expire-tokens") => AdminOp::ExpireTokens,
        ("POST", "/flush-search") => AdminOp::FlushSearch,
        ("GET", "/config") => AdminOp::GetConfig,
        ("PUT" | "PATCH", "/config") => AdminOp::SetConfig,
        ("GET", "/companies") => AdminOp::DumpCompanies,
        ("POST", "/companies") => AdminOp::InsertCompanies,
        ("GET", "/associations") => AdminOp::DumpAssociations,
        ("GET", "/config/companies") => AdminOp::GetCompanyConfig,
        ("PUT" | "PATCH", "/config/companies") => AdminOp::SetCompanyConfig,
        _ => return Target::NotFound,
    };
    Target::Admin(op)
}

fn decode(segment: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", segment.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| segment.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_paths_win_over_ids() {
        assert_eq!(
            route(&Method::POST, "/crm/v3/objects/contacts/batch/read"),
            Target::Api(ApiOp::Records(CrmObject::Contacts, RecordOp::BatchRead))
        );
        assert_eq!(
            route(&Method::GET, "/crm/v3/objects/contacts/123"),
            Target::Api(ApiOp::Records(
                CrmObject::Contacts,
                RecordOp::Get("123".into())
            ))
        );
        assert_eq!(
            route(&Method::GET, "/crm/v3/objects/contacts/a%40b.com"),
            Target::Api(ApiOp::Records(
                CrmObject::Contacts,
                RecordOp::Get("a@b.com".into())
            ))
        );
        assert_eq!(
            route(&Method::PUT, "/crm/v3/objects/contacts/1"),
            Target::MethodNotAllowed
        );
    }

    #[test]
    fn companies_are_served_by_name_and_type_id_without_gdpr_delete() {
        for path in [
            "/crm/v3/objects/companies/merge",
            "/crm/v3/objects/0-2/merge",
            "/crm/objects/2026-03/companies/merge",
        ] {
            assert_eq!(
                route(&Method::POST, path),
                Target::Api(ApiOp::Records(CrmObject::Companies, RecordOp::Merge)),
                "{path}"
            );
        }
        // Companies are no people: `gdpr-delete` reads as a record id, which takes no POST.
        assert_eq!(
            route(&Method::POST, "/crm/v3/objects/companies/gdpr-delete"),
            Target::MethodNotAllowed
        );
        assert_eq!(
            route(&Method::POST, "/crm/v3/properties/companies/groups"),
            Target::Api(ApiOp::Properties(
                CrmObject::Companies,
                PropertyOp::CreateGroup
            ))
        );
    }

    #[test]
    fn association_paths_name_both_sides_and_spend_their_own_budget() {
        let batch = route(
            &Method::POST,
            "/crm/v4/associations/contacts/companies/batch/labels/archive",
        );
        let Target::Api(op) = batch else {
            panic!("routed: {batch:?}")
        };
        assert_eq!(op.bucket(), Bucket::Associations);
        assert_eq!(op.kind(), OpKind::Write);
        let single = route(
            &Method::DELETE,
            "/crm/v4/objects/contacts/1/associations/companies/2",
        );
        let Target::Api(op) = single else {
            panic!("routed: {single:?}")
        };
        assert_eq!(op.bucket(), Bucket::General, "no exemption in the spec");
        assert_eq!(
            route(
                &Method::PUT,
                "/crm/v4/objects/company/7/associations/default/contact/9"
            ),
            Target::Api(ApiOp::Associations {
                from: CrmObject::Companies,
                to: CrmObject::Contacts,
                op: AssocOp::PutDefault("7".into(), "9".into()),
            })
        );
        assert_eq!(
            route(&Method::GET, "/crm/v4/objects/0-1/7/associations/0-2"),
            Target::Api(ApiOp::Associations {
                from: CrmObject::Contacts,
                to: CrmObject::Companies,
                op: AssocOp::List("7".into()),
            })
        );
        assert_eq!(
            route(&Method::GET, "/crm/objects/2026-03/contacts/7"),
            Target::Api(ApiOp::Records(
                CrmObject::Contacts,
                RecordOp::Get("7".into())
            ))
        );
    }

    #[test]
    fn oauth_serves_old_and_new_endpoints() {
        for p in ["/oauth/v1/token", "/oauth/v3/token", "/oauth/2026-03/token"] {
            assert_eq!(route(&Method::POST, p), Target::OAuth(OAuthOp::Token));
        }
        assert_eq!(
            route(&Method::GET, "/oauth/authorize"),
            Target::OAuth(OAuthOp::Authorize)
        );
        assert_eq!(
            route(&Method::GET, "/oauth/1000001/authorize"),
            Target::OAuth(OAuthOp::Authorize)
        );
        assert_eq!(
            route(&Method::POST, "/oauth/2026-03/token/introspect"),
            Target::OAuth(OAuthOp::Introspect)
        );
    }

    #[test]
    fn admin_lives_under_its_own_prefix() {
        assert_eq!(
            route(&Method::POST, "/_sandbox/reset"),
            Target::Admin(AdminOp::Reset)
        );
        assert_eq!(
            route(&Method::GET, "/_sandbox/config"),
            Target::Admin(AdminOp::GetConfig)
        );
        assert_eq!(
            route(&Method::PUT, "/_sandbox/config"),
            Target::Admin(AdminOp::SetConfig)
        );
        assert_eq!(
            route(&Method::GET, "/crm/v3/objects/contactsx"),
            Target::NotFound
        );
    }
}
