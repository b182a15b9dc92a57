//! One long-running operation (a backup or a restore): its status in memory on the node that
//! runs it, and its record in the store, which every node of a shared store reads — so an
//! operation polled through a load balancer is answered wherever the poll lands.
//!
//! Invariants: the node running an operation holds the store's lease [`LEASE`] as
//! `{node}/{operation}` and renews it every [`HEARTBEAT`] while it runs; a record still
//! `Running` whose lease its node no longer holds belongs to a node that stopped, and is
//! reported failed (never as running for ever).

use axum::http::StatusCode;
use serde_json::{Value, json};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The lease one backup or restore at a time holds, across the nodes of a store.
pub const LEASE: &str = "backup-restore";
/// How long a lease lasts unless renewed: a node that stops is noticed this much later.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often the running node renews its lease and writes its progress.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub enum OpStatus {
    Running,
    Succeeded(Option<Value>),
    Failed {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
}

#[derive(Debug)]
pub struct Operation {
    pub kind: &'static str,
    pub done: AtomicU64,
    pub total: AtomicU64,
    pub status: Mutex<OpStatus>,
    /// What a finished backup or restore did (`revision`, `entities`, `bytes`), shown as
    /// `outcome` beside the service in the operation's result.
    pub outcome: Mutex<Option<Value>>,
}

/// The error code of a failed operation of `kind`.
pub fn failure_code(kind: &str) -> &'static str {
    if kind == "backup" {
        "BackupFailed"
    } else {
        "RestoreFailed"
    }
}

impl Operation {
    pub fn new(kind: &'static str) -> Operation {
        Operation {
            kind,
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            status: Mutex::new(OpStatus::Running),
            outcome: Mutex::new(None),
        }
    }

    pub fn status(&self) -> OpStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn outcome(&self) -> Option<Value> {
        self.outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn progress(&self, done: u64, total: u64) {
        self.done.store(done, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
    }

    /// The record every node reads, written by the node running it (`node`).
    pub fn record(&self, node: &str) -> Value {
        self.record_as(node, self.status())
    }

    /// The record of this operation with `status` (its end, before it is shown).
    pub fn record_as(&self, node: &str, status: OpStatus) -> Value {
        let (status, result, error) = match status {
            OpStatus::Running => ("Running", Value::Null, Value::Null),
            OpStatus::Succeeded(result) => {
                ("Succeeded", result.unwrap_or(Value::Null), Value::Null)
            }
            OpStatus::Failed {
                status,
                code,
                message,
            } => (
                "Failed",
                Value::Null,
                json!({"status": status.as_u16(), "code": code, "message": message}),
            ),
        };
        json!({
            "kind": self.kind, "node": node, "status": status,
            "done": self.done.load(Ordering::Relaxed), "total": self.total.load(Ordering::Relaxed),
            "outcome": self.outcome(), "result": result, "error": error,
        })
    }

    /// The operation a record describes; `holder` is who holds [`LEASE`] now. A record still
    /// running whose node no longer holds the lease is reported failed.
    pub fn from_record(id: &str, record: &Value, holder: Option<&str>) -> Operation {
        let kind = if record["kind"] == "backup" {
            "backup"
        } else {
            "restore"
        };
        let op = Operation::new(kind);
        let number = |k: &str| record[k].as_u64().unwrap_or(0);
        op.progress(number("done"), number("total"));
        *op.outcome.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(record["outcome"].clone()).filter(|v| !v.is_null());
        let node = record["node"].as_str().unwrap_or_default();
        let status = match record["status"].as_str() {
            Some("Succeeded") => {
                OpStatus::Succeeded(Some(record["result"].clone()).filter(|v| !v.is_null()))
            }
            Some("Failed") => OpStatus::Failed {
                status: record["error"]["status"]
                    .as_u64()
                    .and_then(|s| StatusCode::from_u16(s as u16).ok())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                code: failure_code(kind),
                message: record["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            },
            _ if holder == Some(format!("{node}/{id}").as_str()) => OpStatus::Running,
            _ => OpStatus::Failed {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                code: failure_code(kind),
                message: orphaned(kind, node),
            },
        };
        *op.status.lock().unwrap_or_else(|e| e.into_inner()) = status;
        op
    }
}

/// What is said of an operation whose node stopped before it reported its end.
fn orphaned(kind: &str, node: &str) -> String {
    if kind == "backup" {
        format!(
            "The node that ran this backup ({node}) stopped before it finished. An archive appears under its name only once complete; start the backup again."
        )
    } else {
        format!(
            "The node that ran this restore ({node}) stopped before it reported its end. A restore is applied in one transaction, so the service holds all of the archive or none of it (its revision tells which); start the restore again if needed."
        )
    }
}

/// How long a client should wait before it polls an operation again (`Retry-After`, seconds):
/// backups of small instances end within a second.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// An operation's status as ARM's `Azure-AsyncOperation` URL answers it (always 200).
pub fn status_body(id: &str, op: &Operation) -> Value {
    match op.status() {
        OpStatus::Running => progress_body(id, op),
        OpStatus::Succeeded(_) => {
            json!({"id": id, "name": id, "status": "Succeeded", "operation": op.kind, "percentComplete": 100})
        }
        OpStatus::Failed { code, message, .. } => json!({
            "id": id, "name": id, "status": "Failed", "operation": op.kind,
            "error": {"code": code, "message": message},
        }),
    }
}

/// The body of a `202` while running: APIM-style status with progress.
pub fn progress_body(id: &str, op: &Operation) -> Value {
    let done = op.done.load(Ordering::Relaxed);
    let total = op.total.load(Ordering::Relaxed);
    let percent = (done * 100).checked_div(total).unwrap_or(0).min(99);
    json!({"id": id, "name": id, "status": "InProgress", "operation": op.kind, "percentComplete": percent})
}
