//! Bearer-token authentication for `/api`, and where the token comes from.
//!
//! The token is `WASUP_TOKEN` if set, else the content of the token file
//! (`http.token_file`, default `<state.dir>/token`); if neither exists on
//! first start, a random token is written to that file with mode 0600 and
//! the log says where, never what.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use actix_web::body::EitherBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, Error, ResponseError as _};
use base64::Engine as _;
use rand::RngCore as _;
use subtle::ConstantTimeEq as _;

use super::error::ApiError;

/// The API token (kept out of `Debug` output).
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// Loads the token as described in the module docs.
    pub fn load_or_create(env: Option<String>, file: &Path) -> std::io::Result<Self> {
        if let Some(value) = env.filter(|v| !v.trim().is_empty()) {
            return Ok(Self(value.trim().to_string()));
        }
        match std::fs::read_to_string(file) {
            Ok(text) if !text.trim().is_empty() => {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = std::fs::metadata(file)?.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        format!(
                            "the token file {} has mode {mode:04o}: others can read the API token; run `chmod 600 {}` (and consider a new token)",
                            file.display(),
                            file.display()
                        ),
                    ));
                }
                return Ok(Self(text.trim().to_string()));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut out = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(file)?;
        // mode() applies only when the file is created, and under the umask.
        std::fs::set_permissions(file, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        out.write_all(value.as_bytes())?;
        out.write_all(b"\n")?;
        tracing::info!(path = %file.display(), "generated an API token (read it from this file)");
        Ok(Self(value))
    }

    fn matches(&self, presented: &str) -> bool {
        bool::from(self.0.as_bytes().ct_eq(presented.as_bytes()))
    }
}

/// Checks `Authorization: Bearer <token>`; the 401 answer when it fails.
pub fn check(req: &actix_web::HttpRequest) -> Result<(), ApiError> {
    let presented = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let token = req.app_data::<web::Data<Token>>().cloned();
    if matches!((presented, token), (Some(p), Some(t)) if t.matches(p)) {
        return Ok(());
    }
    let message = if presented.is_none() { "missing bearer token: send Authorization: Bearer <token>" } else { "invalid bearer token" };
    Err(ApiError::new(StatusCode::UNAUTHORIZED, message))
}

/// Middleware for the `/api` scope: 401 unless `Authorization: Bearer <token>`.
pub async fn require_token(
    req: ServiceRequest,
    next: Next<impl actix_web::body::MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl actix_web::body::MessageBody>>, Error> {
    if let Err(denied) = check(req.request()) {
        return Ok(req.into_response(denied.error_response()).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_token_is_generated_once_into_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state").join("token");
        let first = Token::load_or_create(None, &file).unwrap();
        assert!(first.0.len() >= 40, "32 random bytes, base64");
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        let again = Token::load_or_create(Some("  ".into()), &file).unwrap();
        assert_eq!(again.0, first.0, "an existing file is reused; a blank env var is ignored");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Token::load_or_create(None, &file).unwrap_err().to_string();
        assert!(err.contains("chmod 600") && err.contains("0644"), "{err}");
        let env = Token::load_or_create(Some("from-env".into()), &file).unwrap();
        assert!(env.matches("from-env") && !env.matches("from-env2") && !env.matches(""));
        assert_eq!(format!("{env:?}"), "Token(..)", "never printed");
    }
}
