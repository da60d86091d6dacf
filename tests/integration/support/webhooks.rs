//! A responders' webhook receiver on loopback: every JSON body POSTed to it,
//! with its Authorization header and path, in order of arrival.

use std::sync::{Arc, Mutex};

use serde_json::Value;

/// One delivery: the path, the Authorization header, the JSON body.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub path: String,
    pub auth: Option<String>,
    pub body: Value,
}

pub type Received = Arc<Mutex<Vec<Delivery>>>;

/// Starts a receiver; returns its base URL (`http://127.0.0.1:PORT`) and what it receives.
pub async fn receiver() -> (String, Received) {
    use axum::{Router, http::HeaderMap, http::Uri, routing::post};
    let got: Received = Arc::default();
    let sink = got.clone();
    let app = Router::new().route(
        "/{*path}",
        post(move |uri: Uri, headers: HeaderMap, body: String| {
            let sink = sink.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                sink.lock().unwrap().push(Delivery {
                    path: uri.path().to_string(),
                    auth,
                    body: serde_json::from_str(&body).unwrap_or(Value::Null),
                });
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}
