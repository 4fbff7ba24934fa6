//! An incident's per-second timeline, kept so that copying an incident costs
//! the running minute, not the whole attack.
//!
//! A running incident is cloned every second (into its `Updated` event and
//! into the mitigation task's copy). With a plain `Vec<Point>` that was a
//! copy of every second so far: a day-long attack on 200 hosts meant
//! moving ~500 MB a second. Here the completed minutes sit behind one
//! shared `Arc`, and only the minute in progress is owned; a clone is one
//! reference count and at most [`Timeline::SEGMENT`] points. When a minute
//! completes it is appended to the shared part — copied once if a clone
//! still holds it, so at worst once a minute.

use std::sync::Arc;

use serde::ser::{Serialize, SerializeSeq, Serializer};

use super::Point;

/// Seconds of an incident, oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    /// Whole minutes: always a multiple of [`Timeline::SEGMENT`] points.
    done: Arc<Vec<Point>>,
    /// The minute in progress: fewer than [`Timeline::SEGMENT`] points.
    tail: Vec<Point>,
}

impl Timeline {
    /// Points per segment: a minute of seconds. Also how the store keeps a
    /// timeline, one record per segment.
    pub const SEGMENT: usize = 60;

    /// Appends a second; seconds come in order (rollback reads the
    /// timeline from its end on that assumption).
    pub fn push(&mut self, p: Point) {
        debug_assert!(
            self.last().is_none_or(|l| l.second <= p.second),
            "timeline seconds go forward"
        );
        self.tail.push(p);
        if self.tail.len() == Self::SEGMENT {
            Arc::make_mut(&mut self.done).append(&mut self.tail);
        }
    }

    pub fn len(&self) -> usize {
        self.done.len() + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn last(&self) -> Option<&Point> {
        self.tail.last().or(self.done.last())
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Point> + '_ {
        self.done.iter().chain(&self.tail)
    }

    /// The minute segments in order; the last may be partial.
    pub fn segments(&self) -> impl DoubleEndedIterator<Item = &[Point]> + '_ {
        self.done
            .chunks(Self::SEGMENT)
            .chain((!self.tail.is_empty()).then_some(&self.tail[..]))
    }

    pub fn clear(&mut self) {
        *self = Timeline::default();
    }
}

impl From<Vec<Point>> for Timeline {
    fn from(points: Vec<Point>) -> Timeline {
        let mut t = Timeline::default();
        for p in points {
            t.push(p);
        }
        t
    }
}

impl Serialize for Timeline {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for p in self.iter() {
            seq.serialize_element(p)?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(second: u64) -> Point {
        Point {
            second,
            pps: second * 10,
            bps: 0,
            est_tcp: 0,
            samples: 0,
        }
    }

    #[test]
    fn it_keeps_every_point_in_order_across_minutes() {
        let mut t = Timeline::default();
        assert!(t.is_empty() && t.last().is_none());
        for s in 0..150 {
            t.push(point(s));
            assert_eq!(t.len(), s as usize + 1);
            assert_eq!(t.last(), Some(&point(s)));
        }
        let seconds: Vec<u64> = t.iter().map(|p| p.second).collect();
        assert_eq!(seconds, (0..150).collect::<Vec<_>>());
        let lens: Vec<usize> = t.segments().map(<[Point]>::len).collect();
        assert_eq!(lens, [60, 60, 30]);
        assert_eq!(t.segments().last().unwrap()[0], point(120));
        assert_eq!(
            serde_json::to_value(&t).unwrap().as_array().unwrap().len(),
            150
        );
        assert_eq!(Timeline::from(t.iter().cloned().collect::<Vec<_>>()), t);
    }

    #[test]
    fn a_clone_shares_the_finished_minutes_and_keeps_its_own_view() {
        let mut t = Timeline::from((0..120).map(point).collect::<Vec<_>>());
        t.push(point(120));
        let copy = t.clone();
        assert!(Arc::ptr_eq(&t.done, &copy.done), "whole minutes are shared");
        // The original goes on past the next minute; the copy is unchanged.
        for s in 121..200 {
            t.push(point(s));
        }
        assert_eq!(copy.len(), 121);
        assert_eq!(copy.last(), Some(&point(120)));
        assert_eq!(t.len(), 200);
        assert_eq!(t.segments().count(), 4);
        assert_eq!(copy.segments().count(), 3);
    }
}
