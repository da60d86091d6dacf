//! SCRAM-SHA-256 password verifiers, as PostgreSQL stores them in
//! `pg_authid.rolpassword`. reprise sends verifiers, never passwords (so no
//! password reaches the server's logs), and checks whether a role's stored
//! verifier matches the password in its Secret without logging in.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// A new verifier for `password`, with a random salt.
pub fn verifier(password: &str) -> String {
    postgres_protocol::password::scram_sha_256(password.as_bytes())
}

/// Whether `stored` (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`)
/// was made from `password`. Anything else (md5, unset) does not match.
pub fn matches(stored: &str, password: &str) -> bool {
    let Some(rest) = stored.strip_prefix("SCRAM-SHA-256$") else {
        return false;
    };
    let Some((params, keys)) = rest.split_once('$') else {
        return false;
    };
    let (Some((iterations, salt)), Some((stored_key, server_key))) = (params.split_once(':'), keys.split_once(':'))
    else {
        return false;
    };
    let (Ok(iterations), Ok(salt), Ok(stored_key), Ok(server_key)) = (
        iterations.parse::<u32>(),
        STANDARD.decode(salt),
        STANDARD.decode(stored_key),
        STANDARD.decode(server_key),
    ) else {
        return false;
    };
    let mut salted = [0u8; 32];
    // PostgreSQL runs the password through SASLprep first; for ASCII passwords
    // that is the identity. Others may not match and are then simply set again.
    if pbkdf2::pbkdf2::<Hmac<Sha256>>(password.as_bytes(), &salt, iterations, &mut salted).is_err() {
        return false;
    }
    let client_key = hmac(&salted, b"Client Key");
    let server = hmac(&salted, b"Server Key");
    Sha256::digest(client_key).as_slice() == stored_key.as_slice() && server.as_slice() == server_key.as_slice()
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_matches_its_password_only() {
        let v = verifier("correct horse");
        assert!(matches(&v, "correct horse"));
        assert!(!matches(&v, "correct horse "));
        assert!(!matches("md5abcdef", "correct horse"));
        assert!(!matches("SCRAM-SHA-256$x", "correct horse"));
    }
}
