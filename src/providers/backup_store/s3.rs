//! The S3 calls `object_store` does not make: Object Lock (is it enabled on
//! the bucket; set an object's retention). Signed with object_store's own
//! SigV4 signer, sent with reqwest, path-style; answers are bounded and only
//! their status and error code are read.

use http::{Method, Request};
use k8s_openapi::jiff::Timestamp;
use object_store::{
    aws::{AwsAuthorizer, AwsCredential},
    client::HttpRequestBody,
    path::Path,
};
use reqwest::Url;

use crate::api::database::LockMode;

/// A bucket reached with signed requests of our own.
#[derive(Clone, Debug)]
pub struct Bucket {
    client: reqwest::Client,
    /// `<endpoint>/<bucket>/`.
    base: Url,
    region: String,
    credential: std::sync::Arc<AwsCredential>,
}

impl Bucket {
    pub fn new(
        endpoint: Option<&str>,
        bucket: &str,
        region: Option<&str>,
        key_id: &str,
        secret: &str,
    ) -> Result<Self, String> {
        let region = region.unwrap_or("us-east-1").to_string();
        let endpoint = endpoint
            .map(str::to_string)
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let base = Url::parse(&format!("{}/{bucket}/", endpoint.trim_end_matches('/')))
            .map_err(|e| format!("the endpoint is not a URL: {e}"))?;
        crate::install_crypto_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            client,
            base,
            region,
            credential: std::sync::Arc::new(AwsCredential {
                key_id: key_id.into(),
                secret_key: secret.into(),
                token: None,
            }),
        })
    }

    async fn send(&self, method: Method, url: Url, body: Vec<u8>) -> Result<(u16, String), String> {
        use base64::Engine;
        use sha2::Digest;
        let mut req = Request::builder().method(method.clone()).uri(url.as_str());
        if !body.is_empty() {
            let sum = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&body));
            req = req
                .header("x-amz-checksum-sha256", sum)
                .header("x-amz-sdk-checksum-algorithm", "SHA256")
                .header("content-type", "application/xml");
        }
        let mut req = req
            .body(HttpRequestBody::from(body.clone()))
            .map_err(|e| e.to_string())?;
        AwsAuthorizer::new(&self.credential, "s3", &self.region)
            .try_authorize(&mut req, None)
            .map_err(|e| format!("signing: {e}"))?;
        let mut out = self.client.request(method, url).body(body);
        for (k, v) in req.headers() {
            out = out.header(k, v);
        }
        let resp = out
            .send()
            .await
            .map_err(|e| super::stable(&crate::providers::artifacts::error_chain(&e)))?;
        let status = resp.status().as_u16();
        let text = read_bounded(resp).await;
        Ok((status, error_code(&text).unwrap_or_default()))
    }

    /// Whether Object Lock is enabled on the bucket.
    pub async fn lock_enabled(&self) -> Result<bool, String> {
        let mut url = self.base.clone();
        url.set_query(Some("object-lock="));
        match self.send(Method::GET, url, vec![]).await? {
            (200, _) => Ok(true),
            (404, code) if code == "ObjectLockConfigurationNotFoundError" => Ok(false),
            (status, code) => Err(format!(
                "reading the bucket's Object Lock configuration: HTTP {status} {code}"
            )),
        }
    }

    /// Sets the retention of object `key` until `until`.
    pub async fn retain(&self, key: &Path, mode: LockMode, until: Timestamp) -> Result<(), String> {
        let mut url = self.base.join(key.as_ref()).map_err(|e| format!("object {key}: {e}"))?;
        url.set_query(Some("retention="));
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode><RetainUntilDate>{}</RetainUntilDate></Retention>",
            mode.as_s3(),
            until.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        );
        match self.send(Method::PUT, url, body.into_bytes()).await? {
            (200..=299, _) => Ok(()),
            (status, code) => Err(format!("setting the retention of {key}: HTTP {status} {code}")),
        }
    }
}

/// At most 16 KiB of an answer.
async fn read_bounded(mut resp: reqwest::Response) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > 16 << 10 {
            body.truncate(16 << 10);
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// The `<Code>` of an S3 error document: letters only, at most 64.
pub(super) fn error_code(xml: &str) -> Option<String> {
    let start = xml.find("<Code>")? + 6;
    let len = xml[start..].find("</Code>")?;
    let code: String = xml[start..start + len]
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(64)
        .collect();
    Some(code)
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_codes_are_read_bounded_and_plain() {
        assert_eq!(
            super::error_code("<Error><Code>AccessDenied</Code><Message>x</Message></Error>").as_deref(),
            Some("AccessDenied")
        );
        assert_eq!(
            super::error_code("<Code><script>alert</script></Code>").as_deref(),
            Some("scriptalertscript")
        );
        assert_eq!(super::error_code("no xml"), None);
    }
}
