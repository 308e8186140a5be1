//! Which operation a method and path name: HubSpot's own paths, the OAuth pages and the
//! sandbox's admin paths (under their own prefix, never mixed with HubSpot's).

use poem::http::Method;

/// The prefix of the admin endpoints.
pub(crate) const ADMIN_PREFIX: &str = "/_sandbox";

/// Contacts paths: v3 and the date-versioned successor, by name or by object type id.
const CONTACT_PREFIXES: [&str; 4] = [
    "/crm/v3/objects/contacts",
    "/crm/v3/objects/0-1",
    "/crm/objects/2026-03/contacts",
    "/crm/objects/2026-03/0-1",
];

/// A CRM operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ApiOp {
    /// `GET /contacts`
    List,
    /// `POST /contacts`
    Create,
    /// `GET /contacts/{id}`
    Get(String),
    /// `PATCH /contacts/{id}`
    Update(String),
    /// `DELETE /contacts/{id}`
    Archive(String),
    /// `POST /contacts/batch/read`
    BatchRead,
    /// `POST /contacts/batch/create`
    BatchCreate,
    /// `POST /contacts/batch/update`
    BatchUpdate,
    /// `POST /contacts/batch/upsert`
    BatchUpsert,
    /// `POST /contacts/batch/archive`
    BatchArchive,
    /// `POST /contacts/search`
    Search,
    /// `POST /contacts/merge`
    Merge,
    /// `POST /contacts/gdpr-delete`
    GdprDelete,
    /// `GET /crm/v3/properties/contacts`
    ListProperties,
    /// `POST /crm/v3/properties/contacts`
    CreateProperty,
    /// `GET /crm/v3/properties/contacts/{name}`
    GetProperty(String),
    /// `PATCH /crm/v3/properties/contacts/{name}`
    UpdateProperty(String),
    /// `DELETE /crm/v3/properties/contacts/{name}`
    ArchiveProperty(String),
    /// `GET /account-info/v3/details`
    AccountDetails,
    /// `GET /account-info/v3/api-usage/daily/private-apps`
    DailyUsage,
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
            Self::Search => OpKind::Search,
            Self::Create
            | Self::Update(_)
            | Self::Archive(_)
            | Self::BatchCreate
            | Self::BatchUpdate
            | Self::BatchUpsert
            | Self::BatchArchive
            | Self::Merge
            | Self::GdprDelete => OpKind::Write,
            _ => OpKind::Read,
        }
    }

    /// The scope an OAuth token needs (private-app tokens have all).
    pub(crate) fn required_scope(&self) -> &'static str {
        match self {
            Self::ListProperties | Self::GetProperty(_) => "crm.schemas.contacts.read",
            Self::CreateProperty | Self::UpdateProperty(_) | Self::ArchiveProperty(_) => {
                "crm.schemas.contacts.write"
            }
            Self::AccountDetails | Self::DailyUsage => "oauth",
            op if op.kind() == OpKind::Write => "crm.objects.contacts.write",
            _ => "crm.objects.contacts.read",
        }
    }

    /// A short stable name for counters.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::List => "contacts.list",
            Self::Create => "contacts.create",
            Self::Get(_) => "contacts.get",
            Self::Update(_) => "contacts.update",
            Self::Archive(_) => "contacts.archive",
            Self::BatchRead => "contacts.batch_read",
            Self::BatchCreate => "contacts.batch_create",
            Self::BatchUpdate => "contacts.batch_update",
            Self::BatchUpsert => "contacts.batch_upsert",
            Self::BatchArchive => "contacts.batch_archive",
            Self::Search => "contacts.search",
            Self::Merge => "contacts.merge",
            Self::GdprDelete => "contacts.gdpr_delete",
            Self::ListProperties => "properties.list",
            Self::CreateProperty => "properties.create",
            Self::GetProperty(_) => "properties.get",
            Self::UpdateProperty(_) => "properties.update",
            Self::ArchiveProperty(_) => "properties.archive",
            Self::AccountDetails => "account.details",
            Self::DailyUsage => "account.daily_usage",
        }
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
            Self::Api(op) => {
                op.kind() == OpKind::Write
                    || matches!(
                        op,
                        ApiOp::CreateProperty
                            | ApiOp::UpdateProperty(_)
                            | ApiOp::ArchiveProperty(_)
                    )
            }
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
    for prefix in CONTACT_PREFIXES {
        if let Some(rest) = path.strip_prefix(prefix)
            && (rest.is_empty() || rest.starts_with('/'))
        {
            return contacts(method, rest);
        }
    }
    for prefix in ["/crm/v3/properties/contacts", "/crm/v3/properties/0-1"] {
        if let Some(rest) = path.strip_prefix(prefix)
            && (rest.is_empty() || rest.starts_with('/'))
        {
            return properties(method, rest);
        }
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

fn contacts(method: &Method, rest: &str) -> Target {
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let post = |op| only(method, Method::POST, op);
    match segments.as_slice() {
        [] if *method == Method::GET => Target::Api(ApiOp::List),
        [] => post(ApiOp::Create),
        ["batch", "read"] => post(ApiOp::BatchRead),
        ["batch", "create"] => post(ApiOp::BatchCreate),
        ["batch", "update"] => post(ApiOp::BatchUpdate),
        ["batch", "upsert"] => post(ApiOp::BatchUpsert),
        ["batch", "archive"] => post(ApiOp::BatchArchive),
        ["search"] => post(ApiOp::Search),
        ["merge"] => post(ApiOp::Merge),
        ["gdpr-delete"] => post(ApiOp::GdprDelete),
        [id] => {
            let id = decode(id);
            match *method {
                Method::GET => Target::Api(ApiOp::Get(id)),
                Method::PATCH => Target::Api(ApiOp::Update(id)),
                Method::DELETE => Target::Api(ApiOp::Archive(id)),
                _ => Target::MethodNotAllowed,
            }
        }
        _ => Target::NotFound,
    }
}

fn properties(method: &Method, rest: &str) -> Target {
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [] if *method == Method::GET => Target::Api(ApiOp::ListProperties),
        [] => only(method, Method::POST, ApiOp::CreateProperty),
        [name] => {
            let name = decode(name);
            match *method {
                Method::GET => Target::Api(ApiOp::GetProperty(name)),
                Method::PATCH => Target::Api(ApiOp::UpdateProperty(name)),
                Method::DELETE => Target::Api(ApiOp::ArchiveProperty(name)),
                _ => Target::MethodNotAllowed,
            }
        }
        _ => Target::NotFound,
    }
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
            Target::Api(ApiOp::BatchRead)
        );
        assert_eq!(
            route(&Method::GET, "/crm/v3/objects/contacts/123"),
            Target::Api(ApiOp::Get("123".into()))
        );
        assert_eq!(
            route(&Method::GET, "/crm/v3/objects/contacts/a%40b.com"),
            Target::Api(ApiOp::Get("a@b.com".into()))
        );
        assert_eq!(
            route(&Method::PUT, "/crm/v3/objects/contacts/1"),
            Target::MethodNotAllowed
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
