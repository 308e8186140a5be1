//! The methods each path has, for the `Allow` header of a 405 (RFC 9110 §15.5.6).
//!
//! poem's router refuses a method without saying which ones the path has, so the table is
//! built from the same API types that make the OpenAPI document (plus the docs routes), and
//! cannot disagree with it.

use poem::http::Method;
use poem_openapi::registry::MetaApi;

/// Path templates (`/api/jobs/{id}`) and their methods.
#[derive(Debug, Clone, Default)]
pub struct AllowedMethods {
    paths: Vec<(Vec<Segment>, Vec<Method>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
}

impl AllowedMethods {
    /// The table of every operation of `apis`.
    pub fn of(apis: &[MetaApi]) -> Self {
        let mut table = Self::default();
        for api in apis {
            for path in &api.paths {
                for op in &path.operations {
                    table.add(&path.path, op.method.clone());
                }
            }
        }
        table
    }

    /// Adds `method` to `template` (`{name}` segments match any one segment).
    pub fn add(&mut self, template: &str, method: Method) {
        let segments = parse(template);
        match self.paths.iter_mut().find(|(s, _)| *s == segments) {
            Some((_, methods)) if !methods.contains(&method) => methods.push(method),
            Some(_) => {}
            None => self.paths.push((segments, vec![method])),
        }
    }

    /// The `Allow` value for `path`: its methods in a fixed order, `HEAD` with every `GET`
    /// (poem answers it); `None` for a path no route has.
    pub fn for_path(&self, path: &str) -> Option<String> {
        let wanted: Vec<&str> = split(path).collect();
        let (_, methods) = self.paths.iter().find(|(template, _)| {
            template.len() == wanted.len()
                && template.iter().zip(&wanted).all(|(t, w)| match t {
                    Segment::Literal(l) => l == w,
                    Segment::Param => !w.is_empty(),
                })
        })?;
        let has_head = methods.contains(&Method::HEAD) || methods.contains(&Method::GET);
        let mut names: Vec<&str> = ORDER
            .iter()
            .filter(|m| methods.contains(m) || (**m == Method::HEAD && has_head))
            .map(Method::as_str)
            .collect();
        // Methods outside the usual ones, in the order they were added.
        names.extend(
            methods
                .iter()
                .filter(|m| !ORDER.contains(m))
                .map(Method::as_str),
        );
        Some(names.join(", "))
    }
}

/// The order `Allow` lists the usual methods in.
const ORDER: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.trim_end_matches('/').split('/').skip(1)
}

fn parse(template: &str) -> Vec<Segment> {
    split(template)
        .map(|s| {
            if (s.starts_with('{') && s.ends_with('}')) || s.starts_with(':') {
                Segment::Param
            } else {
                Segment::Literal(s.to_owned())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_lists_its_methods_with_head_beside_get() {
        let mut table = AllowedMethods::default();
        table.add("/api/jobs", Method::GET);
        table.add("/api/jobs", Method::POST);
        table.add("/api/jobs/{id}", Method::GET);
        table.add("/api/jobs/{id}/cancel", Method::POST);
        assert_eq!(
            table.for_path("/api/jobs").as_deref(),
            Some("GET, HEAD, POST")
        );
        assert_eq!(
            table.for_path("/api/jobs/01ABC").as_deref(),
            Some("GET, HEAD")
        );
        assert_eq!(
            table.for_path("/api/jobs/x/cancel").as_deref(),
            Some("POST")
        );
        assert_eq!(table.for_path("/api/nope"), None);
        assert_eq!(table.for_path("/api/jobs/x/y"), None);
    }
}
