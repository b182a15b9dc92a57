//! What a restore reads from a continuous archive's storage before anything is verified, and
//! what `--archive-every` takes, never panic: the index and day-index JSON (and their checks),
//! an archive file's plain header and trailer, a segment under a key, a cron expression.
#![no_main]

use gatehouse_archiver::layout::{DayIndex, Index};
use gatehouse_archiver::BaseSchedule;
use gatehouse_backup::BackupKey;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

static KEY: LazyLock<BackupKey> =
    LazyLock::new(|| BackupKey::parse(&BackupKey::generate()).expect("a new key parses"));

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = serde_json::from_slice::<Index>(data) {
        let _ = index.check();
    }
    if let Ok(day) = serde_json::from_slice::<DayIndex>(data) {
        let _ = day.check();
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(schedule) = BaseSchedule::cron(text)
    {
        let last = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let _ = schedule.due(last, SystemTime::now());
    }
    let file = std::env::temp_dir().join(format!("gatehouse-fuzz-{}.ghseg", std::process::id()));
    if std::fs::write(&file, data).is_ok() {
        let _ = gatehouse_backup::archive::read_plain_manifest(&file);
        let _ = gatehouse_archiver::segment::read(&file, &KEY);
    }
});
