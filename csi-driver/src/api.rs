//! The hpchain management API, as the plugin uses it: JSON over HTTP with
//! the cluster's bearer token. Calls block (ureq), so they run on tokio's
//! blocking pool.

use serde_json::Value;
use std::time::Duration;

/// An API failure: the HTTP status (0 when the API was unreachable), the
/// stable error code and the message, which names the object and the fix.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} [{}]", self.message, self.code)
    }
}

impl ApiError {
    pub fn is_not_found(&self) -> bool {
        self.status == 404
    }
}

#[derive(Clone)]
pub struct Api {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Api {
    pub fn new(base: &str, token: &str) -> Api {
        Api {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(5))
                // Flatten and trim walk every object: allow them time.
                .timeout(Duration::from_secs(600))
                .build(),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, ApiError> {
        let request = self
            .agent
            .request(method, &format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {}", self.token));
        let result = match body {
            Some(b) => request.send_json(b.clone()),
            None => request.call(),
        };
        match result {
            Ok(response) => {
                let text = response.into_string().unwrap_or_default();
                if text.is_empty() {
                    Ok(Value::Null)
                } else {
                    serde_json::from_str(&text).map_err(|e| ApiError {
                        status: 0,
                        code: "api.bad_answer".into(),
                        message: format!(
                            "{method} {path}: the API answered something not JSON: {e}"
                        ),
                    })
                }
            }
            Err(ureq::Error::Status(status, response)) => {
                let body: Value = response.into_json().unwrap_or(Value::Null);
                Err(ApiError {
                    status,
                    code: body["error"]["code"]
                        .as_str()
                        .unwrap_or("api.error")
                        .to_string(),
                    message: body["error"]["message"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("{method} {path}: HTTP {status}")),
                })
            }
            Err(e) => Err(ApiError {
                status: 0,
                code: "api.unreachable".into(),
                message: format!(
                    "cannot reach the hpchain API at {}: {e}; check --api and that a node is up",
                    self.base
                ),
            }),
        }
    }

    /// Runs a call on the blocking pool.
    async fn run(
        &self,
        method: &'static str,
        path: String,
        body: Option<Value>,
    ) -> Result<Value, ApiError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.call(method, &path, body.as_ref()))
            .await
            .unwrap_or_else(|e| {
                Err(ApiError {
                    status: 0,
                    code: "api.task".into(),
                    message: e.to_string(),
                })
            })
    }

    pub async fn get(&self, path: String) -> Result<Value, ApiError> {
        self.run("GET", path, None).await
    }
    pub async fn post(&self, path: String, body: Value) -> Result<Value, ApiError> {
        self.run("POST", path, Some(body)).await
    }
    pub async fn put(&self, path: String, body: Value) -> Result<Value, ApiError> {
        self.run("PUT", path, Some(body)).await
    }
    pub async fn patch(&self, path: String, body: Value) -> Result<Value, ApiError> {
        self.run("PATCH", path, Some(body)).await
    }
    pub async fn delete(&self, path: String) -> Result<Value, ApiError> {
        self.run("DELETE", path, None).await
    }
}
