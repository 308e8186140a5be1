//! The server-rendered HTML pages' common parts: escaping, a minimal layout and the strict
//! security headers every page is sent with.
//!
//! No template engine: the pages are a few paragraphs, and building them from [`escape`]d
//! pieces keeps every interpolated value visibly escaped.

use std::fmt::Write as _;

use poem::http::{HeaderValue, StatusCode, header};
use poem::{IntoResponse, Response};

/// The pages load nothing (no scripts, images or fonts), style themselves inline, post forms
/// only to this origin, and may not be framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Marks a response as a deliberate HTML page, so that the error-envelope layer leaves an
/// HTML error page (e.g. a refused OAuth callback) as it is instead of turning it into JSON.
#[derive(Debug, Clone, Copy)]
pub struct HtmlPage;

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page: a title and a body of already-escaped HTML.
#[derive(Debug, Clone)]
pub struct Page {
    status: StatusCode,
    title: String,
    body: String,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;\
     padding:0 1rem;line-height:1.5;color:#222}table{border-collapse:collapse;width:100%}\
     th,td{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left}\
     code{background:#f4f4f4;padding:0 .2rem}.ok{color:#176f2c}.bad{color:#a11}\
     a.button{display:inline-block;padding:.5rem 1rem;background:#ff7a59;color:#fff;\
     text-decoration:none;border-radius:4px}";

impl Page {
    /// A page with status 200; `title` is plain text (escaped here).
    pub fn new(title: &str) -> Self {
        Self {
            status: StatusCode::OK,
            title: title.to_owned(),
            body: String::new(),
            headers: Vec::new(),
        }
    }

    /// The same page with another status.
    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Appends a paragraph of plain text (escaped here).
    pub fn para(mut self, text: &str) -> Self {
        let _ = write!(self.body, "<p>{}</p>", escape(text));
        self
    }

    /// Appends HTML the caller built from escaped pieces.
    pub fn raw(mut self, html: &str) -> Self {
        self.body.push_str(html);
        self
    }

    /// Adds a response header (e.g. `Set-Cookie`, `Retry-After`).
    pub fn header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The whole document.
    fn document(&self) -> String {
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
             <title>{title} · crm-sync</title><style>{STYLE}</style></head>\
             <body><h1>{title}</h1>{body}</body></html>",
            title = escape(&self.title),
            body = self.body,
        )
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut resp = Response::builder()
            .status(self.status)
            .content_type("text/html; charset=utf-8")
            .body(self.document());
        for (name, value) in self.headers {
            resp.headers_mut().append(name, value);
        }
        with_security_headers(resp)
    }
}

/// Adds the headers every HTML answer carries (pages and redirects alike).
pub fn with_security_headers(mut resp: Response) -> Response {
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Pages show connection state and one-time links; nothing should be cached.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.set_data(HtmlPage);
    resp
}

/// A `302 Found` to a path of this service, with the security headers.
pub fn redirect(location: &'static str) -> Response {
    with_security_headers(
        Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, location)
            .finish(),
    )
}

/// A `303 See Other` to a path of this service (the answer to a form post), with the security
/// headers.
pub fn see_other(location: &'static str) -> Response {
    with_security_headers(
        Response::builder()
            .status(StatusCode::SEE_OTHER)
            .header(header::LOCATION, location)
            .finish(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_both_quotes() {
        assert_eq!(
            escape(r#"<a href="x" onclick='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn titles_and_paragraphs_are_escaped() {
        let doc = Page::new("<t>").para("<script>").document();
        assert!(doc.contains("<h1>&lt;t&gt;</h1>"));
        assert!(doc.contains("<p>&lt;script&gt;</p>"));
        assert!(!doc.contains("<script>"));
    }
}
