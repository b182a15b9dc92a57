//! The files of a data directory, named once for the server that writes them and the clients
//! and tools that read them.

/// The base URLs and identity of a running instance (JSON).
pub const ENDPOINTS: &str = "endpoints.json";
/// The admin token, alone on one line (0600).
pub const ADMIN_TOKEN: &str = "admin-token";
/// The SQLite database (with its `-wal` and `-shm` files beside it).
pub const DATABASE: &str = "gatehouse.db";
/// The key that seals secrets at rest (0600); it goes with the database.
pub const STORE_KEY: &str = "store.key";
/// Held (flock) by the one process that serves, backs up or restores the directory.
pub const LOCK: &str = "gatehouse.lock";
/// Left by a deleted instance; `serve` refuses to start over it.
pub const DELETED_MARKER: &str = "DELETED";
/// The backup key made by the first backup that named none (an age identity, 0600): a stock
/// APIM client cannot send `encryptionKey`.
pub const BACKUP_KEY: &str = "backup.key";
