//! A TCP relay on loopback in front of the API server that a test can
//! freeze: while frozen, no byte goes either way (open connections hang, new
//! ones wait), as when the API server stops answering. Only the clients
//! pointed at the relay (an operator's kubeconfig) see the freeze.

use std::path::{Path, PathBuf};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

pub struct Relay {
    pub port: u16,
    frozen: watch::Sender<bool>,
}

async fn pass(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.wait_for(|f| !f).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Relay {
    /// Relays to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (frozen, rx) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, mut gate) = (upstream.clone(), rx.clone());
                tokio::spawn(async move {
                    if gate.wait_for(|f| !f).await.is_err() {
                        return;
                    }
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pass(cr, sw, gate.clone()), pass(sr, cw, gate));
                });
            }
        });
        Self { port, frozen }
    }

    pub fn freeze(&self, frozen: bool) {
        let _ = self.frozen.send(frozen);
    }

    /// A copy of `kubeconfig` whose server is this relay.
    pub fn kubeconfig(&self, kubeconfig: &Path) -> PathBuf {
        let text = std::fs::read_to_string(kubeconfig).unwrap();
        let rewritten: String = text
            .lines()
            .map(|l| match l.trim_start().strip_prefix("server: https://127.0.0.1:") {
                Some(_) => format!(
                    "{}server: https://127.0.0.1:{}",
                    &l[..l.len() - l.trim_start().len()],
                    self.port
                ),
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let path = std::env::temp_dir().join(format!("reprise-relay-{}.kubeconfig", self.port));
        std::fs::write(&path, rewritten + "\n").unwrap();
        path
    }
}

/// The `host:port` of the server in a kubeconfig.
pub fn server_of(kubeconfig: &Path) -> String {
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix("server: https://"))
        .map(|s| s.trim().trim_end_matches('/').to_string())
        .expect("a server in the kubeconfig")
}
