//! CRM search: HubSpot's filter groups, operators, one sort, a text query, 200 per page and
//! at most 10,000 results per query, over the (lagging) search index.

use std::cmp::Ordering;

use serde::Deserialize;

use super::objects::CrmObject;
use super::properties::{PropertyCatalog, PropertyType, parse_instant_ms};
use super::store::{SearchRecord, Store};

/// Default page size.
pub(crate) const DEFAULT_LIMIT: usize = 10;
/// Largest page.
pub(crate) const MAX_LIMIT: usize = 200;
/// No query reaches past this many results.
pub(crate) const RESULT_CAP: usize = 10_000;
/// Most filter groups per request.
pub(crate) const MAX_GROUPS: usize = 5;
/// Most filters per group.
pub(crate) const MAX_FILTERS_PER_GROUP: usize = 6;
/// Most filters per request.
pub(crate) const MAX_FILTERS: usize = 18;
/// Longest `query`.
pub(crate) const MAX_QUERY_CHARS: usize = 3000;

/// A string, number or boolean in a request, kept as its text.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Scalar {
    /// A JSON string.
    Text(String),
    /// A JSON number.
    Number(serde_json::Number),
    /// A JSON boolean.
    Bool(bool),
}

impl Scalar {
    /// The value as HubSpot reads it.
    pub(crate) fn text(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Number(n) => n.to_string(),
            Self::Bool(b) => b.to_string(),
        }
    }
}

/// A filter operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum Operator {
    /// Equal.
    Eq,
    /// Not equal (also matches records without the property).
    Neq,
    /// Less than.
    Lt,
    /// Less than or equal.
    Lte,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Gte,
    /// `value <= x <= highValue`.
    Between,
    /// One of `values`.
    In,
    /// None of `values`.
    NotIn,
    /// Has a value.
    HasProperty,
    /// Has no value.
    NotHasProperty,
    /// A token of the value matches (`*` wildcards allowed).
    ContainsToken,
    /// No token matches.
    NotContainsToken,
}

/// One filter.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Filter {
    /// The property.
    pub property_name: String,
    /// The operator.
    pub operator: Operator,
    /// The value.
    #[serde(default)]
    pub value: Option<Scalar>,
    /// The values of IN / NOT_IN.
    #[serde(default)]
    pub values: Option<Vec<Scalar>>,
    /// The upper bound of BETWEEN.
    #[serde(default)]
    pub high_value: Option<Scalar>,
}

/// Filters that must all match.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct FilterGroup {
    /// The filters.
    #[serde(default)]
    pub filters: Vec<Filter>,
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum Direction {
    /// Smallest first.
    #[default]
    Ascending,
    /// Largest first.
    Descending,
}

/// A sort: the documented object, or the string form the spec types (`"-createdate"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Sort {
    /// `"createdate"` or `"-createdate"`.
    Text(String),
    /// `{"propertyName": .., "direction": ..}`.
    Object {
        /// The property.
        #[serde(rename = "propertyName")]
        property_name: String,
        /// The direction.
        #[serde(default)]
        direction: Direction,
    },
}

impl Sort {
    fn parts(&self) -> (String, Direction) {
        match self {
            Self::Text(s) => match s.strip_prefix('-') {
                Some(name) => (name.to_owned(), Direction::Descending),
                None => (s.clone(), Direction::Ascending),
            },
            Self::Object {
                property_name,
                direction,
            } => (property_name.clone(), *direction),
        }
    }
}

/// The body of `POST /crm/v3/objects/{contacts,companies}/search`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SearchRequest {
    /// OR of AND groups.
    #[serde(default)]
    pub filter_groups: Vec<FilterGroup>,
    /// At most one sort.
    #[serde(default)]
    pub sorts: Vec<Sort>,
    /// Free text.
    #[serde(default)]
    pub query: Option<String>,
    /// Properties to return.
    #[serde(default)]
    pub properties: Option<Vec<String>>,
    /// Page size.
    #[serde(default)]
    pub limit: Option<Scalar>,
    /// Offset, as a string.
    #[serde(default)]
    pub after: Option<Scalar>,
}

/// A page of results (records are borrowed from the store).
#[derive(Debug)]
pub(crate) struct SearchPage<'a> {
    /// All matches (capped only in what can be paged).
    pub total: usize,
    /// This page.
    pub records: Vec<SearchRecord<'a>>,
    /// Offset of the next page.
    pub next_after: Option<usize>,
}

/// Runs a search; `Err` carries the 400 message.
pub(crate) fn search<'a>(
    store: &'a Store,
    req: &SearchRequest,
    now_ms: i64,
) -> Result<SearchPage<'a>, String> {
    let limit = parse_limit(req.limit.as_ref())?;
    let offset = parse_after(req.after.as_ref())?;
    check_shape(req)?;
    let groups = compile_groups(&store.catalog, &req.filter_groups)?;
    let sort = match req.sorts.first() {
        Some(s) => {
            let (name, dir) = s.parts();
            let kind = kind_of(&store.catalog, &name)?;
            Some((name, kind, dir))
        }
        None => None,
    };
    let query = req
        .query
        .as_deref()
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .map(str::to_lowercase);
    let mut hits: Vec<SearchRecord<'a>> = store
        .search_view(now_ms)
        .filter(|r| groups.is_empty() || groups.iter().any(|g| g.iter().all(|f| f.matches(r))))
        .filter(|r| {
            query
                .as_deref()
                .is_none_or(|q| matches_query(store.kind(), r, q))
        })
        .collect();
    if let Some((name, kind, dir)) = &sort {
        hits.sort_by(|a, b| compare_for_sort(a, b, name, *kind, *dir));
    }
    let total = hits.len();
    let end = offset.saturating_add(limit).min(total).min(RESULT_CAP);
    let records = if offset < end {
        hits[offset..end].to_vec()
    } else {
        Vec::new()
    };
    let next_after = (end < total && offset < end).then_some(end);
    Ok(SearchPage {
        total,
        records,
        next_after,
    })
}

fn parse_limit(limit: Option<&Scalar>) -> Result<usize, String> {
    let Some(raw) = limit else {
        return Ok(DEFAULT_LIMIT);
    };
    let n: i64 = raw
        .text()
        .parse()
        .map_err(|_| format!("limit must be a number, got {}", raw.text()))?;
    match usize::try_from(n) {
        Ok(0) => Ok(DEFAULT_LIMIT),
        Ok(n) if n <= MAX_LIMIT => Ok(n),
        _ => Err(format!("limit must be between 1 and {MAX_LIMIT}, got {n}")),
    }
}

fn parse_after(after: Option<&Scalar>) -> Result<usize, String> {
    let Some(raw) = after else {
        return Ok(0);
    };
    let text = raw.text();
    if text.is_empty() {
        return Ok(0);
    }
    let offset: usize = text
        .parse()
        .map_err(|_| format!("after must be the paging cursor of a previous page, got {text}"))?;
    if offset >= RESULT_CAP {
        return Err(format!(
            "Cannot page past {RESULT_CAP} results: narrow the query with filters (after={offset})."
        ));
    }
    Ok(offset)
}

fn check_shape(req: &SearchRequest) -> Result<(), String> {
    let groups = req.filter_groups.len();
    let filters: usize = req.filter_groups.iter().map(|g| g.filters.len()).sum();
    if groups > MAX_GROUPS {
        return Err(format!(
            "Too many filter groups: {groups} (at most {MAX_GROUPS})."
        ));
    }
    if req
        .filter_groups
        .iter()
        .any(|g| g.filters.len() > MAX_FILTERS_PER_GROUP)
    {
        return Err(format!(
            "Too many filters in a group (at most {MAX_FILTERS_PER_GROUP})."
        ));
    }
    if filters > MAX_FILTERS {
        return Err(format!(
            "Too many filters: {filters} (at most {MAX_FILTERS} in all groups)."
        ));
    }
    if req.sorts.len() > 1 {
        return Err("Only one sort is supported.".to_owned());
    }
    if req
        .query
        .as_ref()
        .is_some_and(|q| q.chars().count() > MAX_QUERY_CHARS)
    {
        return Err(format!(
            "query is longer than {MAX_QUERY_CHARS} characters."
        ));
    }
    Ok(())
}

fn kind_of(catalog: &PropertyCatalog, name: &str) -> Result<PropertyType, String> {
    catalog
        .get(name)
        .map(|d| d.kind)
        .ok_or_else(|| format!("Property \"{name}\" does not exist"))
}

/// A filter with its property's type resolved and its values pre-normalised.
struct Compiled {
    name: String,
    kind: PropertyType,
    op: Operator,
    value: Option<Key>,
    high: Option<Key>,
    values: Vec<Key>,
    pattern: Option<String>,
}

fn compile_groups(
    catalog: &PropertyCatalog,
    groups: &[FilterGroup],
) -> Result<Vec<Vec<Compiled>>, String> {
    groups
        .iter()
        .filter(|g| !g.filters.is_empty())
        .map(|g| g.filters.iter().map(|f| compile(catalog, f)).collect())
        .collect()
}

fn compile(catalog: &PropertyCatalog, f: &Filter) -> Result<Compiled, String> {
    let kind = kind_of(catalog, &f.property_name)?;
    let needs_value = !matches!(
        f.operator,
        Operator::HasProperty | Operator::NotHasProperty | Operator::In | Operator::NotIn
    );
    if needs_value && f.value.is_none() {
        return Err(format!(
            "Filter on \"{}\" with operator {:?} needs a value.",
            f.property_name, f.operator
        ));
    }
    if f.operator == Operator::Between && f.high_value.is_none() {
        return Err(format!(
            "BETWEEN on \"{}\" needs a highValue.",
            f.property_name
        ));
    }
    if matches!(f.operator, Operator::In | Operator::NotIn) && f.values.is_none() {
        return Err(format!(
            "{:?} on \"{}\" needs values.",
            f.operator, f.property_name
        ));
    }
    let key = |s: &Scalar| Key::filter_value(kind, &s.text());
    Ok(Compiled {
        name: f.property_name.clone(),
        kind,
        op: f.operator,
        value: f.value.as_ref().map(key),
        high: f.high_value.as_ref().map(key),
        // IN on strings compares with the values as given: HubSpot wants them lower-case.
        values: f
            .values
            .iter()
            .flatten()
            .map(|s| Key::verbatim(kind, &s.text()))
            .collect(),
        pattern: f.value.as_ref().map(|s| s.text().to_lowercase()),
    })
}

/// A comparable form of a value.
#[derive(Debug, Clone, PartialEq)]
enum Key {
    Num(f64),
    Text(String),
}

impl Key {
    fn stored(kind: PropertyType, raw: &str) -> Key {
        Self::filter_value(kind, raw)
    }

    fn filter_value(kind: PropertyType, raw: &str) -> Key {
        match kind {
            PropertyType::Number => raw
                .trim()
                .parse()
                .map_or_else(|_| Key::Text(raw.to_lowercase()), Key::Num),
            k if k.is_temporal() => parse_instant_ms(raw)
                .map_or_else(|| Key::Text(raw.to_lowercase()), |ms| Key::Num(ms as f64)),
            // Enumeration values are case-sensitive; everything else is not.
            PropertyType::Enumeration => Key::Text(raw.to_owned()),
            _ => Key::Text(raw.to_lowercase()),
        }
    }

    fn verbatim(kind: PropertyType, raw: &str) -> Key {
        match kind {
            PropertyType::Number | PropertyType::Date | PropertyType::Datetime => {
                Self::filter_value(kind, raw)
            }
            _ => Key::Text(raw.to_owned()),
        }
    }

    fn cmp(&self, other: &Key) -> Option<Ordering> {
        match (self, other) {
            (Key::Num(a), Key::Num(b)) => a.partial_cmp(b),
            (Key::Text(a), Key::Text(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

impl Compiled {
    fn matches(&self, r: &SearchRecord<'_>) -> bool {
        let raw = r
            .properties
            .get(&self.name)
            .map(String::as_str)
            .filter(|v| !v.is_empty());
        let stored = raw.map(|v| Key::stored(self.kind, v));
        let ord = |target: &Option<Key>| match (&stored, target) {
            (Some(s), Some(t)) => s.cmp(t),
            _ => None,
        };
        match self.op {
            Operator::Eq => ord(&self.value) == Some(Ordering::Equal),
            Operator::Neq => ord(&self.value) != Some(Ordering::Equal),
            Operator::Lt => ord(&self.value) == Some(Ordering::Less),
            Operator::Lte => matches!(ord(&self.value), Some(Ordering::Less | Ordering::Equal)),
            Operator::Gt => ord(&self.value) == Some(Ordering::Greater),
            Operator::Gte => matches!(ord(&self.value), Some(Ordering::Greater | Ordering::Equal)),
            Operator::Between => {
                matches!(ord(&self.value), Some(Ordering::Greater | Ordering::Equal))
                    && matches!(ord(&self.high), Some(Ordering::Less | Ordering::Equal))
            }
            Operator::In => stored.as_ref().is_some_and(|s| self.in_values(s)),
            Operator::NotIn => !stored.as_ref().is_some_and(|s| self.in_values(s)),
            Operator::HasProperty => raw.is_some(),
            Operator::NotHasProperty => raw.is_none(),
            Operator::ContainsToken => raw.is_some_and(|v| self.token_match(v)),
            Operator::NotContainsToken => !raw.is_some_and(|v| self.token_match(v)),
        }
    }

    fn in_values(&self, stored: &Key) -> bool {
        self.values
            .iter()
            .any(|v| stored.cmp(v) == Some(Ordering::Equal))
    }

    fn token_match(&self, value: &str) -> bool {
        let Some(pattern) = &self.pattern else {
            return false;
        };
        let lower = value.to_lowercase();
        std::iter::once(lower.as_str())
            .chain(lower.split(|c: char| c.is_whitespace() || ",;".contains(c)))
            .chain(lower.split(|c: char| !c.is_alphanumeric()))
            .filter(|t| !t.is_empty())
            .any(|token| glob(pattern, token))
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(pos) => rest = &rest[pos + part.len()..],
            None => return false,
        }
    }
    true
}

fn matches_query(object: CrmObject, r: &SearchRecord<'_>, query: &str) -> bool {
    object.query_properties().iter().any(|name| {
        r.properties.get(*name).is_some_and(|v| {
            let lower = v.to_lowercase();
            lower.starts_with(query)
                || lower
                    .split(|c: char| !c.is_alphanumeric())
                    .any(|token| token.starts_with(query))
        })
    })
}

fn compare_for_sort(
    a: &SearchRecord<'_>,
    b: &SearchRecord<'_>,
    name: &str,
    kind: PropertyType,
    dir: Direction,
) -> Ordering {
    let key = |r: &SearchRecord<'_>| r.properties.get(name).map(|v| Key::stored(kind, v));
    let ordering = match (key(a), key(b)) {
        // Records without the value come last in either direction.
        (None, None) => Ordering::Equal,
        (None, Some(_)) => return Ordering::Greater,
        (Some(_), None) => return Ordering::Less,
        (Some(x), Some(y)) => x.cmp(&y).unwrap_or(Ordering::Equal),
    };
    let ordering = if dir == Direction::Descending {
        ordering.reverse()
    } else {
        ordering
    };
    ordering.then(a.id.cmp(&b.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_wildcards() {
        assert!(glob("*@example.com", "ada@example.com"));
        assert!(glob("ada*", "ada@example.com"));
        assert!(glob("a*e*m", "ada@example.com"));
        assert!(!glob("*@other.com", "ada@example.com"));
        assert!(glob("ada", "ada"));
    }

    #[test]
    fn sorts_parse_from_strings_and_objects() {
        let req: SearchRequest = serde_json::from_str(
            r#"{"sorts":["-createdate"],"filterGroups":[],"limit":5,"after":"0","properties":[]}"#,
        )
        .expect("parses");
        assert_eq!(
            req.sorts[0].parts(),
            ("createdate".to_owned(), Direction::Descending)
        );
        let req: SearchRequest = serde_json::from_str(
            r#"{"sorts":[{"propertyName":"email","direction":"DESCENDING"}]}"#,
        )
        .expect("parses");
        assert_eq!(
            req.sorts[0].parts(),
            ("email".to_owned(), Direction::Descending)
        );
    }
}
