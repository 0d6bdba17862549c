//! `GET /`: the chat page, rendered once at start-up from `templates/`.

use std::path::Path;

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use crate::config::Config;
use crate::http::AppState;

/// No inline script or style, no third-party origin: the page talks only to
/// the server it came from.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; \
    object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Renders `templates/index.html` once; a broken template fails start-up.
///
/// # Errors
/// The template directory cannot be read or the page does not render.
pub fn render(templates: &Path, config: &Config) -> Result<String, tera::Error> {
    let pattern = templates.join("**").join("*.html");
    let tera = tera::Tera::new(&pattern.to_string_lossy())?;
    let mut context = tera::Context::new();
    context.insert("version", env!("CARGO_PKG_VERSION"));
    context.insert("max_message_bytes", &config.limits.max_message_bytes);
    context.insert("max_name_chars", &config.limits.max_name_chars);
    // Whether /ws needs a token: the page then takes one instead of a name.
    context.insert("auth", if config.auth.is_some() { "on" } else { "off" });
    tera.render("index.html", &context)
}

pub async fn index(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(state.page.clone())
}
