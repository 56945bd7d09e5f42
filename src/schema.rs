//! Helpers for the OpenAPI schemas of tally's own value types (usernames,
//! conversation ids, message ids), which serialise as plain strings with a
//! rule: their schemas say the rule, so the document and the validation
//! agree. The document itself is `crate::http::openapi`'s.

/// The OpenAPI schema of a string that matches `pattern` (and has
/// `format`): how tally's validated names appear in its API document.
pub fn string_schema(
    pattern: &str,
    format: Option<&str>,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaFormat, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .format(format.map(|format| SchemaFormat::Custom(format.to_string())))
        .into()
}
