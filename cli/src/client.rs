//! The HTTP side of the CLI: a small blocking client for a custody-node, turning
//! problem+json answers into errors a person can act on.

use anyhow::{anyhow, bail, Context, Result};
use ledger::checkpoint::{CheckpointVerifier, SignedCheckpoint};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::time::Duration;

pub struct Client {
    base: String,
    http: reqwest::blocking::Client,
}

/// A refusal from the node, with its problem body.
#[derive(Debug)]
pub struct Problem {
    pub status: u16,
    pub body: Value,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |k: &str| self.body.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        write!(
            f,
            "{} ({})",
            s("code").unwrap_or_else(|| "error".into()),
            self.status
        )?;
        if let Some(rule) = s("rule") {
            write!(f, " [{rule}]")?;
        }
        if let Some(field) = s("field") {
            write!(f, " at {field}")?;
        }
        write!(
            f,
            ": {}",
            s("detail").unwrap_or_else(|| self.body.to_string())
        )?;
        if let Some(exp) = s("expected") {
            write!(f, "\n  expected: {exp}")?;
        }
        Ok(())
    }
}
impl std::error::Error for Problem {}

/// The error for an answer that is not a success: its problem+json body (or,
/// if the body is not JSON, its text), named by what was asked.
pub fn refused(what: &str, status: u16, body: &[u8]) -> anyhow::Error {
    let body = serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
    anyhow!(Problem { status, body }).context(format!("{what} was refused"))
}

impl Client {
    pub fn new(base: &str) -> Result<Client> {
        let base = base.trim_end_matches('/').to_owned();
        if let Some(rest) = base.strip_prefix("https://") {
            // Said here, not as "cannot reach the node" at the first request
            // (spec/SECURITY.md §Gaps: the CLI is built without a TLS backend).
            bail!(
                "node URL {base:?}: this build of custody speaks plain HTTP only (no TLS); \
                 reach the node as http://{rest} on a network you trust, or through a \
                 tunnel (e.g. ssh -L 7878:127.0.0.1:7878 the-node's-host)"
            );
        }
        if !base.starts_with("http://") {
            bail!("node URL {base:?} must start with http:// (e.g. http://127.0.0.1:7878)");
        }
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()?;
        Ok(Client { base, http })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn check(
        &self,
        what: &str,
        resp: reqwest::blocking::Response,
    ) -> Result<reqwest::blocking::Response> {
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            return Ok(resp);
        }
        let bytes = resp.bytes().map(|b| b.to_vec()).unwrap_or_default();
        Err(refused(what, status, &bytes))
    }

    fn send(
        &self,
        what: &str,
        req: reqwest::blocking::RequestBuilder,
    ) -> Result<reqwest::blocking::Response> {
        let resp = req.send().with_context(|| {
            format!(
                "{what}: cannot reach the node at {} (is custody-node running?)",
                self.base
            )
        })?;
        self.check(what, resp)
    }

    pub fn get_bytes(&self, path: &str) -> Result<Vec<u8>> {
        let what = format!("GET {path}");
        Ok(self
            .send(&what, self.http.get(self.url(path)))?
            .bytes()?
            .to_vec())
    }

    pub fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let bytes = self.get_bytes(path)?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("GET {path}: the node's answer is not the JSON expected"))
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        let what = format!("POST {path}");
        let resp = self.send(&what, self.http.post(self.url(path)).json(body))?;
        let status = resp.status().as_u16();
        Ok((status, resp.json()?))
    }

    pub fn post_bytes(&self, path: &str, bytes: Vec<u8>) -> Result<Value> {
        let what = format!("POST {path}");
        let resp = self.send(
            &what,
            self.http
                .post(self.url(path))
                .header("content-type", "application/octet-stream")
                .body(bytes),
        )?;
        Ok(resp.json()?)
    }

    /// The log's vkey as the node announces it (trust on first use unless pinned).
    pub fn log_info(&self) -> Result<Value> {
        self.get_json("/v1/log")
    }

    /// The latest checkpoint, verified with `vkey`.
    pub fn checkpoint(&self, vkey: &str) -> Result<SignedCheckpoint> {
        let note =
            String::from_utf8(self.get_bytes("/checkpoint")?).context("checkpoint is not UTF-8")?;
        let v = CheckpointVerifier::new(vkey)?;
        Ok(v.verify(&note)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_https_url_is_refused_with_what_to_do() {
        let e = Client::new("https://ledger.example/")
            .err()
            .expect("refused")
            .to_string();
        assert!(
            e.contains("plain HTTP only") && e.contains("http://ledger.example"),
            "{e}"
        );
        let e = Client::new("ftp://ledger.example")
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("must start with http://"), "{e}");
        assert!(Client::new("http://127.0.0.1:7878/").is_ok());
    }
}
