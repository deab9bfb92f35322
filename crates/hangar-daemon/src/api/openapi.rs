//! The OpenAPI 3 document of `/v1`, assembled from the `#[utoipa::path]`
//! annotations on the handlers and the `ToSchema` types of `hangar-api`.
//! It is served at `GET /v1/openapi.json` and checked in as
//! `docs/openapi.json`; a test here fails when the two differ
//! (`UPDATE_OPENAPI=1 cargo test -p hangar-daemon openapi` rewrites it).
//!
//! Error responses are shared components, one per HTTP status, each naming
//! the `ErrorKind`s reported with that status (from `ErrorKind::ALL`), so
//! the document follows `ErrorKind::http_status`.

use axum::http::header;
use axum::response::IntoResponse;
use hangar_api::ErrorKind;
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Ref, Schema, Type};
use utoipa::openapi::{ContentBuilder, RefOr, Response, ResponseBuilder};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Hangar API",
        description = "The `/v1` HTTP+JSON API of the hangar daemon, served on its Unix socket \
            (`runtime_dir/hangar.sock`). Prose (error kinds, the exec stream, following the \
            console) is in docs/api.md.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        super::list_vms,
        super::create_vm,
        super::show_vm,
        super::delete_vm,
        super::start_vm,
        super::stop_vm,
        super::restart_vm,
        super::exec::exec,
        super::tcp::connect_tcp,
        super::files::read_guest_file,
        super::files::write_guest_file,
        super::tree::read_guest_tree,
        super::tree::write_guest_tree,
        super::console_log,
        super::sessions::list_all_sessions,
        super::sessions::list_sessions,
        super::sessions::start_session,
        super::sessions::show_session,
        super::sessions::remove_session,
        super::sessions::send_session,
        super::sessions::stop_session,
        super::sessions::session_logs,
        super::sessions::attach_session,
        super::list_images,
        super::catalog,
        super::pull_image,
        super::register_image,
        super::upload_image,
        super::import_image,
        super::promote_image,
        super::receive_bundle,
        super::export_bundle,
        super::show_image,
        super::tag_image,
        super::delete_image,
        super::list_ops,
        super::show_op,
        super::cancel_op,
        super::info,
        openapi_json,
    ),
    components(responses(NotFound, Conflict, Invalid, Unavailable, Timeout, Internal)),
    tags(
        (name = "vms", description = "Virtual machines: lifecycle, exec, console"),
        (name = "sessions", description = "Long-lived sessions in VMs: start, attach, send, logs, stop"),
        (name = "images", description = "Local images and the catalog"),
        (name = "operations", description = "Long-running work: follow and cancel"),
        (name = "daemon", description = "The daemon itself and this document"),
    )
)]
struct ApiDoc;

/// The document as a value.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    // The crate version, not utoipa's default (the package name's).
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}

/// The document as pretty JSON with a final newline: the exact bytes of
/// `docs/openapi.json`. Key order is stable (utoipa keeps paths and
/// components in sorted maps).
pub fn document_json() -> String {
    match serde_json::to_string_pretty(&document()) {
        Ok(mut s) => {
            s.push('\n');
            s
        }
        // Serializing plain data cannot fail; say so rather than panic.
        Err(e) => format!("{{\"error\": \"cannot serialize the OpenAPI document: {e}\"}}\n"),
    }
}

/// This document
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "openapi",
    tag = "daemon",
    responses(
        (status = 200, description = "The OpenAPI 3 document of `/v1` (also docs/openapi.json)",
            body = Object, content_type = "application/json"),
    )
)]
pub async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document_json(),
    )
}

/// An error response for `status`, whose `kind` is one of the kinds
/// reported with that status.
fn error_response(status: u16, description: &str) -> RefOr<Response> {
    let kinds: Vec<serde_json::Value> = ErrorKind::ALL
        .into_iter()
        .filter(|k| k.http_status() == status)
        .filter_map(|k| serde_json::to_value(k).ok())
        .collect();
    let names: Vec<String> = kinds
        .iter()
        .filter_map(|k| k.as_str().map(|s| format!("`{s}`")))
        .collect();
    let schema = AllOfBuilder::new()
        .item(Ref::from_schema_name("ApiError"))
        .item(
            ObjectBuilder::new()
                .property(
                    "kind",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(kinds)),
                )
                .required("kind"),
        )
        .build();
    ResponseBuilder::new()
        .description(format!(
            "{description} (`kind`: {}; see docs/api.md)",
            names.join(" or ")
        ))
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Schema::AllOf(schema)))
                .build(),
        )
        .build()
        .into()
}

/// Declares a reusable error response component per HTTP status.
macro_rules! error_responses {
    ($($name:ident = $status:literal, $description:literal;)*) => {$(
        #[doc = $description]
        pub struct $name;
        impl<'r> utoipa::ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                (stringify!($name), error_response($status, $description))
            }
        }
    )*};
}

error_responses! {
    NotFound = 404, "No such VM, image, operation or endpoint";
    Conflict = 409, "The request conflicts with current state, or the operation was cancelled";
    Invalid = 400, "A bad name, value or body";
    Unavailable = 412, "The host lacks something the request needs";
    Timeout = 504, "A deadline passed";
    Internal = 500, "An unexpected failure";
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const CHECKED_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");

    #[test]
    fn openapi_document_in_docs_is_the_generated_one() {
        let generated = document_json();
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(CHECKED_IN, &generated).unwrap();
        }
        let checked_in = std::fs::read_to_string(CHECKED_IN).unwrap_or_default();
        assert!(
            checked_in == generated,
            "docs/openapi.json differs from the document the code generates; if the API change \
             is meant, regenerate it with `UPDATE_OPENAPI=1 cargo test -p hangar-daemon openapi` \
             and commit it"
        );
    }

    #[test]
    fn every_error_status_has_a_response_component_naming_its_kinds() {
        let doc = serde_json::to_value(document()).unwrap();
        let responses = doc["components"]["responses"].as_object().unwrap();
        for kind in ErrorKind::ALL {
            let status = kind.http_status();
            let wire = serde_json::to_value(kind).unwrap();
            let holder = responses.values().find(|r| {
                r["content"]["application/json"]["schema"]["allOf"][1]["properties"]["kind"]["enum"]
                    .as_array()
                    .is_some_and(|kinds| kinds.contains(&wire))
            });
            let holder = holder.unwrap_or_else(|| panic!("no response component for {wire}"));
            // The component must be used with this kind's status somewhere.
            let name = responses
                .iter()
                .find(|(_, r)| *r == holder)
                .map(|(n, _)| n.clone())
                .unwrap();
            let wanted = serde_json::json!({ "$ref": format!("#/components/responses/{name}") });
            let used_with_status = doc["paths"].as_object().unwrap().values().any(|item| {
                item.as_object().unwrap().values().any(|op| {
                    op["responses"]
                        .get(status.to_string())
                        .is_some_and(|r| *r == wanted)
                })
            });
            assert!(
                used_with_status,
                "{name} ({wire}) is never answered with {status}"
            );
        }
    }

    #[test]
    fn every_operation_has_a_unique_id_and_a_tag() {
        let doc = serde_json::to_value(document()).unwrap();
        let mut ids = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            assert!(path.starts_with("/v1/"), "{path}");
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap().to_string();
                assert!(ids.insert(id.clone()), "duplicate operationId {id}");
                assert!(op["tags"][0].is_string(), "{method} {path} has no tag");
            }
        }
    }
}
