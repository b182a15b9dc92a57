//! Which base archives to keep, as restic's `forget` chooses snapshots: the newest `last`, and
//! the newest base of each of the newest `hourly` hours, `daily` days and `weekly` ISO weeks that
//! have one. Every point from the oldest kept base on stays restorable: segments go only when
//! they end at or before it (no kept base needs them).

use crate::layout::{BaseEntry, Index};
use crate::remote::Archive;
use gatehouse_backup::storage::StorageError;
use std::collections::BTreeSet;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keep {
    pub last: Option<usize>,
    pub hourly: Option<usize>,
    pub daily: Option<usize>,
    pub weekly: Option<usize>,
}

impl Keep {
    /// Whether any rule is set (with none, everything is kept).
    pub fn any(&self) -> bool {
        self.last.is_some()
            || self.hourly.is_some()
            || self.daily.is_some()
            || self.weekly.is_some()
    }
}

/// The names of the bases to keep. The newest base is always kept.
pub fn kept(bases: &[BaseEntry], keep: &Keep) -> BTreeSet<String> {
    let mut newest_first: Vec<&BaseEntry> = bases.iter().collect();
    newest_first.sort_by_key(|b| std::cmp::Reverse(b.revision));
    let mut out = BTreeSet::new();
    if !keep.any() {
        return bases.iter().map(|b| b.name.clone()).collect();
    }
    if let Some(b) = newest_first.first() {
        out.insert(b.name.clone());
    }
    if let Some(n) = keep.last {
        out.extend(newest_first.iter().take(n).map(|b| b.name.clone()));
    }
    let bucketed = |n: Option<usize>,
                    bucket: &dyn Fn(OffsetDateTime) -> String,
                    out: &mut BTreeSet<String>| {
        let Some(n) = n else { return };
        let mut seen = BTreeSet::new();
        for b in &newest_first {
            let Ok(at) = OffsetDateTime::parse(&b.at, &Rfc3339) else {
                continue;
            };
            if seen.len() >= n && !seen.contains(&bucket(at)) {
                break;
            }
            if seen.insert(bucket(at)) {
                out.insert(b.name.clone());
            }
        }
    };
    bucketed(
        keep.hourly,
        &|t| format!("{}-{}-{}", t.date(), t.hour(), 0),
        &mut out,
    );
    bucketed(keep.daily, &|t| t.date().to_string(), &mut out);
    bucketed(
        keep.weekly,
        &|t| {
            let (year, week, _) = t.to_iso_week_date();
            format!("{year}-W{week}")
        },
        &mut out,
    );
    out
}

/// What a retention pass removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Forgotten {
    pub bases: usize,
    pub segments: usize,
}

/// Applies `keep` to the archive: the index is rewritten first (so a restore never looks for
/// what is being deleted), then the objects go.
pub async fn forget(archive: &Archive, keep: &Keep) -> Result<Forgotten, StorageError> {
    if !keep.any() {
        return Ok(Forgotten::default());
    }
    let mut index: Index = archive.index().await?;
    let keep_names = kept(&index.bases, keep);
    let (kept_bases, dropped): (Vec<BaseEntry>, Vec<BaseEntry>) = index
        .bases
        .drain(..)
        .partition(|b| keep_names.contains(&b.name));
    let Some(oldest) = kept_bases.iter().map(|b| b.revision).min() else {
        return Ok(Forgotten::default());
    };
    index.bases = kept_bases;
    let mut unneeded = Vec::new();
    let mut days = Vec::new();
    for day in std::mem::take(&mut index.days) {
        let mut d = archive.day(&day).await?;
        let before = d.segments.len();
        d.segments.retain(|s| {
            let needed = s.range.last > oldest;
            if !needed {
                unneeded.push(s.name.clone());
            }
            needed
        });
        if d.segments.len() != before {
            archive.put_day(&day, &d).await?;
        }
        if !d.segments.is_empty() {
            days.push(day);
        }
    }
    index.days = days;
    archive.put_index(&index).await?;
    for name in dropped.iter().map(|b| &b.name).chain(unneeded.iter()) {
        archive.location(name)?.delete().await?;
    }
    Ok(Forgotten {
        bases: dropped.len(),
        segments: unneeded.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(revision: u64, at: &str) -> BaseEntry {
        BaseEntry {
            name: crate::layout::base_name(revision),
            revision,
            at: at.into(),
            bytes: 1,
        }
    }

    #[test]
    fn keeps_as_restic_forget_does() {
        let bases = vec![
            base(1, "2026-11-01T10:00:00Z"),
            base(2, "2026-11-20T10:00:00Z"),
            base(3, "2026-12-01T09:00:00Z"),
            base(4, "2026-12-01T09:30:00Z"),
            base(5, "2026-12-01T11:00:00Z"),
            base(6, "2026-12-02T11:00:00Z"),
        ];
        let names = |revs: &[u64]| -> BTreeSet<String> {
            revs.iter().map(|r| crate::layout::base_name(*r)).collect()
        };
        assert_eq!(kept(&bases, &Keep::default()), names(&[1, 2, 3, 4, 5, 6]));
        let last2 = Keep {
            last: Some(2),
            ..Keep::default()
        };
        assert_eq!(kept(&bases, &last2), names(&[5, 6]));
        let hourly3 = Keep {
            hourly: Some(3),
            ..Keep::default()
        };
        assert_eq!(
            kept(&bases, &hourly3),
            names(&[4, 5, 6]),
            "the newest of each hour"
        );
        let daily2 = Keep {
            daily: Some(2),
            ..Keep::default()
        };
        assert_eq!(kept(&bases, &daily2), names(&[5, 6]));
        let weekly3 = Keep {
            weekly: Some(3),
            ..Keep::default()
        };
        // 1 and 2 December are in one ISO week (49), 20 November in 47, 1 November in 44.
        assert_eq!(kept(&bases, &weekly3), names(&[1, 2, 6]));
        let both = Keep {
            last: Some(1),
            weekly: Some(5),
            ..Keep::default()
        };
        assert_eq!(kept(&bases, &both), names(&[1, 2, 6]));
    }
}
