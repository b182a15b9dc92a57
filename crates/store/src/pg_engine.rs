//! Talking to PostgreSQL from the store's synchronous API, from any thread — a runtime's
//! worker included — and following what other nodes commit.
//!
//! The connections live on a runtime of their own, on its own thread: a statement is spawned
//! there and its answer waited for on a plain channel, so a caller never nests a runtime and
//! the store's closures (which borrow the caller's state) never cross threads — only the
//! statements do. Connections are pooled; one transaction holds one connection from `BEGIN`
//! to `COMMIT`. A listening connection turns `NOTIFY gatehouse_revision` into the revision
//! followers see, and reconnects (with backoff) when it is cut.
//!
//! Invariants: a pooled connection is returned only after its transaction ended (committed or
//! rolled back); the revision followers see never goes backwards.

use crate::pg::redact_url;
use crate::{Result, StoreError};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_postgres::types::ToSql;

/// The channel commits are announced on (the payload: the new revision).
pub const REVISION_CHANNEL: &str = "gatehouse_revision";

/// The advisory lock every write transaction holds ("gh-write" as a number).
const WRITE_LOCK: i64 = 0x6768_2d77_7269_7465;

/// Connections kept open for reuse.
const POOL_SIZE: usize = 16;

/// A value a statement takes, owned (statements cross to the engine's thread).
pub type Param = Box<dyn ToSql + Send + Sync>;

pub struct Engine {
    url: String,
    runtime: tokio::runtime::Handle,
    /// Ends the runtime's thread when the engine is dropped.
    _stop: tokio::sync::oneshot::Sender<()>,
    idle: Mutex<Vec<Arc<Conn>>>,
    committed: tokio::sync::watch::Sender<u64>,
}

/// A driver error as the store's: unavailability (the server down or going down, the
/// connection cut) apart from a statement's own failure.
fn pg(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            // Class 57: operator intervention (shutdown, starting up); 08: connection.
            if code.starts_with("57") || code.starts_with("08") {
                StoreError::Unavailable(db.message().to_string())
            } else {
                StoreError::Postgres(db.message().to_string())
            }
        }
        None => StoreError::Unavailable(match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        }),
    }
}

/// Connects, with the connection driven by a task on the current runtime; notifications go
/// to `notices` if given.
async fn open(
    url: &str,
    notices: Option<tokio::sync::mpsc::UnboundedSender<String>>,
) -> Result<tokio_postgres::Client> {
    let target = crate::pg::Target::parse(url)?;
    let (client, mut connection) = tokio_postgres::connect(&target.url, target.tls)
        .await
        .map_err(|e| {
            let at = redact_url(url);
            match pg(e) {
                StoreError::Unavailable(m) => {
                    StoreError::Unavailable(format!("cannot connect to {at}: {m}"))
                }
                other => StoreError::Postgres(format!("cannot connect to {at}: {other}")),
            }
        })?;
    tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    if let Some(tx) = &notices {
                        let _ = tx.send(n.payload().to_string());
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    Ok(client)
}

impl Engine {
    /// An engine for `url` (whose schema is already migrated: [`crate::pg::migrate`]), with
    /// its runtime thread and the follower of other nodes' commits started at `revision`.
    pub fn start(url: &str, revision: u64) -> Result<Engine> {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("gatehouse-pg".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(rt) => {
                        let _ = handle_tx.send(Ok(rt.handle().clone()));
                        rt.block_on(async {
                            let _ = stopped.await;
                        });
                    }
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| StoreError::Postgres(format!("cannot start its thread: {e}")))?;
        let runtime = handle_rx
            .recv()
            .map_err(|_| StoreError::Postgres("its thread ended at once".into()))?
            .map_err(|e| StoreError::Postgres(format!("cannot start its runtime: {e}")))?;
        let engine = Engine {
            url: url.to_string(),
            runtime,
            _stop: stop,
            idle: Mutex::new(Vec::new()),
            committed: tokio::sync::watch::channel(revision).0,
        };
        // One connection now, so that a bad URL fails here rather than on the first write.
        let client = engine.connection()?;
        engine.give_back(client);
        engine.follow();
        Ok(engine)
    }

    /// Runs `fut` on the engine's runtime and waits for its answer.
    pub fn call<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .expect("the engine's runtime runs as long as the engine")
    }

    fn connection(&self) -> Result<Arc<Conn>> {
        if let Some(c) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
            && !c.is_closed()
        {
            return Ok(c);
        }
        let url = self.url.clone();
        self.call(async move { open(&url, None).await.map(|c| Arc::new(Conn::new(c))) })
    }

    fn give_back(&self, client: Arc<Conn>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < POOL_SIZE && !client.is_closed() {
            idle.push(client);
        }
    }

    /// Begins a transaction on a connection of its own.
    pub fn begin(&self) -> Result<PgTx<'_>> {
        self.open_transaction("BEGIN".into())
    }

    /// Begins a read-only transaction that sees one snapshot throughout.
    pub fn begin_read(&self) -> Result<PgTx<'_>> {
        self.open_transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY".into())
    }

    /// Begins a transaction with `begin`. A pooled connection the server has dropped (it
    /// restarted while the connection was idle) is found out here: the pool is emptied and a
    /// new connection tried once.
    fn open_transaction(&self, begin: String) -> Result<PgTx<'_>> {
        let mut retried = false;
        loop {
            let client = self.connection()?;
            let (c, begin) = (client.clone(), begin.clone());
            match self
                .call(async move { c.batch_execute(&begin).await })
                .map_err(pg)
            {
                Ok(()) => {
                    return Ok(PgTx {
                        engine: self,
                        client: Some(client),
                    });
                }
                Err(StoreError::Unavailable(_)) if !retried => {
                    self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
                    retried = true;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Vacuums a table (outside any transaction), so old row versions leave the table.
    pub fn vacuum(&self, table: &str) -> Result<()> {
        let client = self.connection()?;
        let (c, sql) = (client.clone(), format!("VACUUM {table}"));
        let done = self
            .call(async move { c.batch_execute(&sql).await })
            .map_err(pg);
        self.give_back(client);
        done
    }

    /// Begins a write: a transaction holding the instance's write lock (so writes from every
    /// node take turns, and revisions have no gaps and no duplicates), with the revision it
    /// starts from.
    pub fn begin_write(&self) -> Result<(PgTx<'_>, u64)> {
        let tx = self.begin_locked()?;
        let rows = tx.query("SELECT value FROM meta WHERE key = 'revision'", Vec::new())?;
        let revision = match rows.first() {
            None => 0,
            Some(row) => {
                let text: String = row.get(0);
                text.parse().map_err(|_| {
                    StoreError::Corrupt(format!("revision '{text}' is not a number"))
                })?
            }
        };
        Ok((tx, revision))
    }

    /// Begins a transaction holding the instance's write lock.
    pub fn begin_locked(&self) -> Result<PgTx<'_>> {
        // One round trip for both: every round trip of a write is time the lock is held.
        self.open_transaction(format!("BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"))
    }

    /// Ends a write that changed something: the revision recorded, every node told (the
    /// notification is delivered when the transaction commits), committed.
    pub fn commit_write(&self, tx: PgTx<'_>, revision: u64) -> Result<()> {
        // One round trip (the values are a number and a constant, nothing to quote).
        tx.commit_after(&format!(
            "INSERT INTO meta (key, value) VALUES ('revision', '{revision}')
             ON CONFLICT (key) DO UPDATE SET value = excluded.value;
             SELECT pg_notify('{REVISION_CHANNEL}', '{revision}');"
        ))?;
        self.committed(revision);
        Ok(())
    }

    /// Follows committed revisions (this node's and, through NOTIFY, every other node's).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.committed.subscribe()
    }

    /// Records a revision this node committed.
    pub fn committed(&self, revision: u64) {
        advance(&self.committed, revision);
    }

    /// Listens for other nodes' commits for as long as the engine lives, reconnecting with a
    /// backoff when the connection is cut.
    fn follow(&self) {
        let url = self.url.clone();
        let committed = self.committed.clone();
        self.runtime.spawn(async move {
            let mut delay = Duration::from_millis(100);
            loop {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                if let Ok(client) = open(&url, Some(tx)).await
                    && client
                        .batch_execute(&format!("LISTEN {REVISION_CHANNEL}"))
                        .await
                        .is_ok()
                {
                    delay = Duration::from_millis(100);
                    // Commits made while no one listened: the revision they reached.
                    if let Ok(Some(row)) = client
                        .query_opt("SELECT value FROM meta WHERE key = 'revision'", &[])
                        .await
                        && let Ok(revision) = row.get::<_, String>(0).parse::<u64>()
                    {
                        advance(&committed, revision);
                    }
                    while let Some(payload) = rx.recv().await {
                        if let Ok(revision) = payload.parse::<u64>() {
                            advance(&committed, revision);
                        }
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        });
    }
}

/// Moves the followed revision forward (never back).
fn advance(committed: &tokio::sync::watch::Sender<u64>, revision: u64) {
    committed.send_if_modified(|r| {
        let newer = revision > *r;
        if newer {
            *r = revision;
        }
        newer
    });
}

/// A pooled connection with the statements it prepared (a statement is prepared once per
/// connection, not once per use: half the round trips).
pub struct Conn {
    client: tokio_postgres::Client,
    statements: Mutex<std::collections::HashMap<String, tokio_postgres::Statement>>,
}

/// Statements kept prepared per connection (the store's are a few dozen).
const MAX_PREPARED: usize = 256;

impl std::ops::Deref for Conn {
    type Target = tokio_postgres::Client;
    fn deref(&self) -> &tokio_postgres::Client {
        &self.client
    }
}

impl Conn {
    fn new(client: tokio_postgres::Client) -> Conn {
        Conn {
            client,
            statements: Mutex::new(std::collections::HashMap::new()),
        }
    }

    async fn statement(
        &self,
        sql: &str,
    ) -> std::result::Result<tokio_postgres::Statement, tokio_postgres::Error> {
        let cached = self
            .statements
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sql)
            .cloned();
        if let Some(statement) = cached {
            return Ok(statement);
        }
        let statement = self.client.prepare(sql).await?;
        let mut statements = self.statements.lock().unwrap_or_else(|e| e.into_inner());
        if statements.len() >= MAX_PREPARED {
            statements.clear();
        }
        statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }
}

/// One transaction on one pooled connection: rolled back unless committed.
pub struct PgTx<'e> {
    engine: &'e Engine,
    client: Option<Arc<Conn>>,
}

impl PgTx<'_> {
    fn client(&self) -> Arc<Conn> {
        self.client
            .clone()
            .expect("present until the transaction ends")
    }

    /// Runs a statement; the number of rows it changed.
    pub fn execute(&self, sql: &str, params: Vec<Param>) -> Result<u64> {
        self.prepared(sql, params, |client, statement, refs| {
            Box::pin(async move { client.execute(&statement, &refs).await })
        })
    }

    /// Runs a query; its rows.
    pub fn query(&self, sql: &str, params: Vec<Param>) -> Result<Vec<tokio_postgres::Row>> {
        self.prepared(sql, params, |client, statement, refs| {
            Box::pin(async move { client.query(&statement, &refs).await })
        })
    }

    /// Runs `run` with the connection, the statement prepared (once per connection) and the
    /// parameters, on the engine's runtime.
    fn prepared<T: Send + 'static>(
        &self,
        sql: &str,
        params: Vec<Param>,
        run: impl for<'c> FnOnce(
            &'c Conn,
            tokio_postgres::Statement,
            Vec<&'c (dyn ToSql + Sync)>,
        ) -> std::pin::Pin<
            Box<dyn Future<Output = std::result::Result<T, tokio_postgres::Error>> + Send + 'c>,
        > + Send
        + 'static,
    ) -> Result<T> {
        let (client, sql) = (self.client(), sql.to_string());
        self.engine
            .call(async move {
                let refs: Vec<&(dyn ToSql + Sync)> = params
                    .iter()
                    .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                let statement = client.statement(&sql).await?;
                run(&client, statement, refs).await
            })
            .map_err(pg)
    }

    /// Streams `data` (rows in COPY's text format) into `COPY … FROM STDIN`; the rows copied.
    pub fn copy_in(&self, sql: &str, data: Vec<u8>) -> Result<u64> {
        use futures::SinkExt;
        let (client, sql) = (self.client(), sql.to_string());
        self.engine
            .call(async move {
                let sink = client.client.copy_in::<_, bytes::Bytes>(&sql).await?;
                let mut sink = std::pin::pin!(sink);
                sink.send(bytes::Bytes::from(data)).await?;
                sink.as_mut().finish().await
            })
            .map_err(pg)
    }

    /// Runs statements without parameters.
    pub fn batch(&self, sql: &str) -> Result<()> {
        let (client, sql) = (self.client(), sql.to_string());
        self.engine
            .call(async move { client.batch_execute(&sql).await })
            .map_err(pg)
    }

    pub fn commit(self) -> Result<()> {
        self.commit_after("")
    }

    /// Runs `statements` (without parameters) and commits, in one round trip.
    fn commit_after(mut self, statements: &str) -> Result<()> {
        let client = self
            .client
            .take()
            .expect("present until the transaction ends");
        let (c, sql) = (client.clone(), format!("{statements} COMMIT"));
        let done = self
            .engine
            .call(async move { c.batch_execute(&sql).await })
            .map_err(pg);
        if done.is_ok() {
            self.engine.give_back(client);
        }
        done
    }
}

impl Drop for PgTx<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let c = client.clone();
            let rolled_back = self
                .engine
                .call(async move { c.batch_execute("ROLLBACK").await });
            if rolled_back.is_ok() {
                self.engine.give_back(client);
            }
        }
    }
}
