//! Continuous archiving and point-in-time restore: next to base archives (the backup format at
//! one revision), the journal is shipped to object storage in encrypted, compressed,
//! checksummed segments, each closed at most a configured interval after its first change; a
//! restore takes the newest base before the point asked for and replays the segments up to it.
//!
//! Modules, bottom up: `layout` (object names and the indexes that let a restore find what it
//! needs without listing the container), `segment` (one segment file: written and read back
//! verified), `remote` (the archive's container), `schedule` (when bases are due), `shipper` (the task a serving node runs:
//! bases and segments cut into a local queue on disk, uploaded in order), `pitr` (a point's
//! base and segments fetched, verified as a chain, and the entries to replay).
//!
//! Invariants: a segment's revisions are whole and contiguous, and it names the revision it
//! follows, so a gap or a missing segment is found before anything is restored; what is cut is
//! on disk before it counts as archived locally, and leaves the queue only once uploaded and
//! indexed; secrets are in plaintext only inside the encrypted segment.

pub mod layout;
pub mod pitr;
pub mod remote;
pub mod retention;
pub mod schedule;
pub mod segment;
pub mod shipper;

pub use layout::{BaseEntry, Index, SegmentEntry};
pub use pitr::{PitrError, Point, PointInTime, fetch_point};
pub use remote::Archive;
pub use schedule::BaseSchedule;
pub use shipper::{ArchiveStatus, ShipperConfig, archived_through, ship_forever};
