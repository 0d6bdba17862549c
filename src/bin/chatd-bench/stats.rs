//! The pure accounting of a run: the tag each message carries, a latency
//! histogram, and per-sender sequence tracking that tells new deliveries from
//! duplicates so that what is lost can be counted exactly.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use memchr::memmem;

/// What a benchmark message carries inside its chat text, so every receiver
/// can measure latency and account for loss on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    /// Which phase (ramp step, fan-out run) sent it; late arrivals from an
    /// earlier phase are not counted in a later one.
    pub phase: u32,
    /// The sender's index, `0..senders`.
    pub sender: u32,
    /// The sender's sequence number in this phase, from 0.
    pub seq: u64,
    /// When it was written, in microseconds since the tool started.
    pub sent_us: u64,
}

/// Where the tag starts inside an `echo` event: the server writes `message`
/// as given, and benchmark texts start with `B`.
static TAG_START: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"message\":\"B"));

impl Tag {
    /// Appends the chat text for this tag, padded with `pad` bytes of `x`.
    pub fn write_text(&self, out: &mut Vec<u8>, pad: usize) {
        use std::io::Write;
        let _ = write!(
            out,
            "B{} {} {} {}",
            self.phase, self.sender, self.seq, self.sent_us
        );
        if pad > 0 {
            out.push(b' ');
            out.resize(out.len() + pad, b'x');
        }
    }

    /// Finds the tag in a server event; `None` for anything else.
    pub fn find(event: &[u8]) -> Option<Self> {
        let start = TAG_START.find(event)? + b"\"message\":\"B".len();
        Self::parse_numbers(&event[start..])
    }

    /// The tag of a chat text (an `echo`'s `message`); `None` for any other
    /// text.
    pub fn parse(text: &str) -> Option<Self> {
        Self::parse_numbers(text.as_bytes().strip_prefix(b"B")?)
    }

    /// The four numbers after the `B`.
    fn parse_numbers(mut rest: &[u8]) -> Option<Self> {
        let mut numbers = [0u64; 4];
        for (i, number) in numbers.iter_mut().enumerate() {
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            if digits == 0 || digits > 19 {
                return None;
            }
            *number = rest[..digits]
                .iter()
                .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            rest = &rest[digits..];
            if i < 3 {
                rest = rest.strip_prefix(b" ")?;
            }
        }
        Some(Self {
            phase: u32::try_from(numbers[0]).ok()?,
            sender: u32::try_from(numbers[1]).ok()?,
            seq: numbers[2],
            sent_us: numbers[3],
        })
    }
}

/// Sub-buckets per power of two: values are kept within 1/64 (1.6 %).
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;

/// A log-linear histogram of microseconds: exact below 128 µs, within 1.6 %
/// above. Percentiles report a bucket's upper edge, so they never flatter.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Histogram {
    fn index(value: u64) -> usize {
        if value < 2 * SUB {
            return value as usize;
        }
        let shift = 63 - value.leading_zeros() - SUB_BITS;
        (u64::from(shift) * SUB + (value >> shift)) as usize
    }

    /// The largest value that falls in bucket `index`.
    fn upper_edge(index: usize) -> u64 {
        let index = index as u64;
        if index < 2 * SUB {
            return index;
        }
        let shift = index / SUB - 1;
        let top = index % SUB + SUB;
        let edge = (u128::from(top + 1) << shift) - 1;
        u64::try_from(edge).unwrap_or(u64::MAX)
    }

    pub fn record(&mut self, value: u64) {
        let index = Self::index(value);
        if index >= self.counts.len() {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] += 1;
        self.total += 1;
        self.max = self.max.max(value);
    }

    pub fn merge(&mut self, other: &Histogram) {
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at or below which `percent` of the values lie; 0 when empty.
    pub fn percentile(&self, percent: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((percent / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Self::upper_edge(index).min(self.max);
            }
        }
        self.max
    }
}

/// What one receiver has seen of one sender: every sequence number below
/// `next`, plus those that came early. Messages from one sender through one
/// hub arrive in order, so `ahead` stays empty and this costs two words.
#[derive(Debug, Clone, Default)]
pub struct SeqTrack {
    next: u64,
    ahead: BTreeSet<u64>,
}

/// Whether an arrival is news.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    New,
    Duplicate,
}

impl SeqTrack {
    pub fn record(&mut self, seq: u64) -> Arrival {
        if seq < self.next || self.ahead.contains(&seq) {
            return Arrival::Duplicate;
        }
        if seq > self.next {
            self.ahead.insert(seq);
            return Arrival::New;
        }
        self.next += 1;
        while self.ahead.remove(&self.next) {
            self.next += 1;
        }
        Arrival::New
    }

    /// Distinct sequence numbers seen.
    #[cfg(test)]
    pub fn unique(&self) -> u64 {
        self.next + self.ahead.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_survives_the_trip_through_an_echo_event() {
        let tag = Tag {
            phase: 3,
            sender: 7,
            seq: 12_345,
            sent_us: 987_654_321,
        };
        let mut text = Vec::new();
        tag.write_text(&mut text, 5);
        assert_eq!(text, b"B3 7 12345 987654321 xxxxx");
        let event = format!(
            r#"{{"type":"echo","id":"9-ab-m4","message":"{}","from":{{"id":"c1","name":"x"}},"ts":1}}"#,
            String::from_utf8(text).unwrap()
        );
        assert_eq!(Tag::find(event.as_bytes()), Some(tag));
    }

    #[test]
    fn events_without_a_whole_tag_are_not_counted() {
        let cases = [
            (
                "welcome",
                r#"{"type":"welcome","client_id":"1","online":3}"#,
            ),
            ("other chat", r#"{"type":"echo","message":"Bob says hi"}"#),
            ("three numbers", r#"{"type":"echo","message":"B1 2 3"}"#),
            (
                "huge number",
                r#"{"type":"echo","message":"B1 2 3 99999999999999999999"}"#,
            ),
            (
                "phase too big",
                r#"{"type":"echo","message":"B9999999999 2 3 4"}"#,
            ),
        ];
        for (what, event) in cases {
            assert_eq!(Tag::find(event.as_bytes()), None, "{what}");
        }
    }

    #[test]
    fn percentiles_come_from_the_recorded_values() {
        let mut histogram = Histogram::default();
        for value in 1..=1000 {
            histogram.record(value);
        }
        assert_eq!(histogram.count(), 1000);
        assert_eq!(histogram.percentile(0.0), 1);
        assert_eq!(histogram.max(), 1000);
        assert_eq!(histogram.percentile(100.0), 1000);
        for (percent, exact) in [(50.0, 500), (95.0, 950), (99.0, 990)] {
            let got = histogram.percentile(percent);
            assert!(
                got >= exact && got <= exact + exact / 64 + 1,
                "p{percent}: {got} vs {exact}"
            );
        }
    }

    #[test]
    fn small_values_are_exact_and_large_ones_within_two_percent() {
        for value in [0, 1, 127, 128, 129, 1_000, 65_535, 1 << 40, u64::MAX] {
            let edge = Histogram::upper_edge(Histogram::index(value));
            assert!(edge >= value, "{value} → {edge}");
            assert!(edge - value <= value / 64, "{value} → {edge}");
        }
        let mut histogram = Histogram::default();
        histogram.record(100);
        assert_eq!(histogram.percentile(50.0), 100);
    }

    #[test]
    fn merged_histograms_count_both() {
        let (mut a, mut b) = (Histogram::default(), Histogram::default());
        a.record(10);
        b.record(5_000);
        a.merge(&b);
        assert_eq!(a.count(), 2);
        assert_eq!(a.max(), 5_000);
        assert_eq!(a.percentile(50.0), 10);
        assert_eq!(Histogram::default().percentile(99.0), 0);
    }

    #[test]
    fn duplicates_and_gaps_are_told_apart() {
        let mut track = SeqTrack::default();
        assert_eq!(track.record(0), Arrival::New);
        assert_eq!(track.record(1), Arrival::New);
        assert_eq!(track.record(1), Arrival::Duplicate);
        assert_eq!(track.record(4), Arrival::New, "early");
        assert_eq!(track.record(4), Arrival::Duplicate, "early twice");
        assert_eq!(track.unique(), 3);
        assert_eq!(track.record(2), Arrival::New);
        assert_eq!(track.record(3), Arrival::New);
        assert_eq!(track.unique(), 5);
        assert_eq!(track.record(0), Arrival::Duplicate);
        // 5 and 6 were sent but never came: 7 sent, 5 unique, 2 lost.
        assert_eq!(7 - track.unique(), 2);
    }
}
