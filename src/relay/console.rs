//! The web console (issue 11): a single HTML page with its script and styles inlined,
//! built from the JavaScript client by `clients/js/console/build.mjs` and embedded in the
//! binary, so it needs no CDN and works offline. `GET /` serves it to browsers
//! (`Accept: text/html`); JSON clients keep getting the info document.

/// The page, built from `clients/js/console/` (CI checks it matches its sources).
pub const HTML: &str = include_str!("../../clients/js/console/dist/console.html");

/// The page's content type.
pub const CONTENT_TYPE: &str = "text/html; charset=utf-8";

/// True when a request's `Accept` header asks for HTML (a browser) and not JSON.
pub fn wants_console(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| accept.contains("text/html") && !accept.contains("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_get_the_console_and_json_clients_do_not() {
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert!(wants_console(Some(browser)));
        assert!(!wants_console(Some("application/json")));
        assert!(!wants_console(Some("*/*")));
        assert!(!wants_console(None));
        assert!(HTML.starts_with("<!doctype html>") && HTML.contains("Axon relay console"));
    }
}
