//! A file uploaded as a `multipart/form-data` part named `file`: the one
//! reader for a media send's file (`POST /api/sessions/{name}/messages`)
//! and a campaign's attachment (`POST /api/campaigns`), so both take the
//! same files and refuse the same ones with the same answers.
//!
//! The file's MIME type is the part's `Content-Type` (required: WhatsApp
//! sends a file by its type, and guessing one from the bytes would send a
//! document as a photo or the other way round). Its size is bounded by its
//! kind's `[media]` limit while it is read.

use actix_multipart::{Field, MultipartError};
use actix_web::http::StatusCode;
use actix_web::web;
use futures_util::StreamExt as _;

use super::conventions::BodyAllowance;
use super::error::ApiError;
use crate::config::Config;
use crate::whatsapp::media::{self, Media, MediaKind};

/// Reads the `file` part `field` into a [`Media`], with the name the client
/// gave (without folders; `file` if none, or if it has control characters;
/// at most 255 characters). A form whose body bound does not cover the
/// file yet gets its `allowance`: the file's limit, and
/// [`super::MEDIA_FORM_OVERHEAD`] for the part's headers and the rest of
/// the form.
///
/// Errors: no `Content-Type`, or not `type/subtype` (400); more bytes than
/// its kind's `[media]` limit (413, naming the limit and ending with
/// `consequence`, e.g. "nothing was sent"), refused as soon as the limit is
/// passed; the body could not be read (as `multipart_error` says).
pub(super) async fn file_part(
    field: &mut Field,
    config: &Config,
    consequence: &str,
    allowance: Option<&BodyAllowance>,
    multipart_error: impl Fn(MultipartError) -> ApiError,
) -> Result<Media, ApiError> {
    let mimetype = field.content_type().map(|m| m.to_string()).unwrap_or_default();
    if !media::valid_mimetype(&mimetype) {
        return Err(ApiError::bad_request("the file part needs a Content-Type (the file's MIME type, type/subtype)"));
    }
    let kind = MediaKind::of(&mimetype);
    let max = usize::try_from(config.media.limit(kind)).unwrap_or(usize::MAX);
    if let Some(allowance) = allowance {
        allowance.grant(max.saturating_add(super::MEDIA_FORM_OVERHEAD));
    }
    let mut value = web::BytesMut::new();
    while let Some(chunk) = field.next().await {
        let chunk = chunk.map_err(&multipart_error)?;
        if value.len() + chunk.len() > max {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the {mimetype} file is larger than {max} bytes, the limit for {}s ({}); {consequence}",
                    kind.as_str(),
                    kind.limit_key()
                ),
            ));
        }
        value.extend_from_slice(&chunk);
    }
    // The name without any folders a client put in front of it.
    let filename = field.content_disposition().and_then(|d| d.get_filename()).unwrap_or("");
    let filename = filename.rsplit(['/', '\\']).next().unwrap_or("").trim();
    let filename = if filename.is_empty() || filename.chars().any(char::is_control) { "file" } else { filename };
    Ok(Media::new(mimetype, filename.chars().take(255).collect(), value.freeze()))
}

/// Checks a file read by [`file_part`] once the form is complete.
///
/// Errors: empty (400); a photo whose bytes are not its `Content-Type`
/// (422: WhatsApp Web decodes photos before sending them).
pub(super) fn check_file(file: &Media) -> Result<(), ApiError> {
    if file.data.is_empty() {
        return Err(ApiError::bad_request("the file is empty"));
    }
    file.check_content().map_err(ApiError::unprocessable)
}
