//! A small blocking client of the management API, for the admin commands
//! and `hpchain dev`.

use serde_json::Value;
use std::time::Duration;

/// Where the API is and how to authenticate.
pub struct ApiClient {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// An API call that failed, worded for the operator.
#[derive(Debug)]
pub struct CallError {
    pub message: String,
    pub code: Option<String>,
    pub status: Option<u16>,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{} [{code}]", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

impl ApiClient {
    pub fn new(base: &str, token: Option<String>) -> ApiClient {
        ApiClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(3))
                .timeout(Duration::from_secs(30))
                .build(),
        }
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let request = self.agent.request(method, &format!("{}{path}", self.base));
        match &self.token {
            Some(t) => request.set("Authorization", &format!("Bearer {t}")),
            None => request,
        }
    }

    fn finish(&self, result: Result<ureq::Response, ureq::Error>) -> Result<Value, CallError> {
        match result {
            Ok(response) if response.status() == 204 => Ok(Value::Null),
            Ok(response) => response.into_json().map_err(|e| CallError {
                message: format!("unreadable answer from {}: {e}", self.base),
                code: None,
                status: None,
            }),
            Err(ureq::Error::Status(status, response)) => {
                let body: Value = response.into_json().unwrap_or(Value::Null);
                Err(CallError {
                    message: body["error"]["message"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("HTTP {status} from {}", self.base)),
                    code: body["error"]["code"].as_str().map(str::to_string),
                    status: Some(status),
                })
            }
            Err(e) => Err(CallError {
                message: format!(
                    "cannot reach the management API at {}: {e}; is a node running there? (`hpchain dev` starts a local cluster)",
                    self.base
                ),
                code: None,
                status: None,
            }),
        }
    }

    /// PUT raw bytes.
    pub fn put_bytes(&self, path: &str, data: &[u8]) -> Result<(), CallError> {
        self.finish(
            self.request("PUT", path)
                .set("Content-Type", "application/octet-stream")
                .send_bytes(data),
        )
        .map(|_| ())
    }

    /// GET raw bytes.
    pub fn get_bytes(&self, path: &str) -> Result<Vec<u8>, CallError> {
        match self.request("GET", path).call() {
            Ok(response) => {
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut response.into_reader(), &mut data).map_err(
                    |e| CallError {
                        message: format!("reading the answer from {}: {e}", self.base),
                        code: None,
                        status: None,
                    },
                )?;
                Ok(data)
            }
            Err(e) => self.finish(Err(e)).map(|_| Vec::new()),
        }
    }

    pub fn get(&self, path: &str) -> Result<Value, CallError> {
        self.finish(self.request("GET", path).call())
    }

    pub fn delete(&self, path: &str) -> Result<Value, CallError> {
        self.finish(self.request("DELETE", path).call())
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value, CallError> {
        self.finish(self.request("POST", path).send_json(body))
    }

    /// [`ApiClient::post`] for a call the server works on for up to `work`
    /// before it answers (a benchmark): the usual 30 s limit would give up
    /// on it early while the server went on.
    pub fn post_waiting(
        &self,
        path: &str,
        body: &Value,
        work: Duration,
    ) -> Result<Value, CallError> {
        self.finish(
            self.request("POST", path)
                .timeout(work + Duration::from_secs(30))
                .send_json(body),
        )
    }

    pub fn put(&self, path: &str, body: &Value) -> Result<Value, CallError> {
        self.finish(self.request("PUT", path).send_json(body))
    }

    pub fn patch(&self, path: &str, body: &Value) -> Result<Value, CallError> {
        self.finish(self.request("PATCH", path).send_json(body))
    }
}
