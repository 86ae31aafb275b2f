//! QR refs: how a batch of refs rotates, when a ref is valid, and the QR
//! string a phone scans.
//!
//! WhatsApp's servers hand an unpaired page a batch of refs. The first ref is
//! shown for `--qr-first`, each later one for `--qr-next`; after the last one
//! the page goes `UNPAIRED_IDLE`. Everything here is pure: time is an argument
//! (Unix epoch milliseconds), randomness is passed in.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rand::RngCore;

/// When each ref of one batch is shown. Times are Unix epoch milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefSchedule {
    /// When the batch was handed out (the first ref's window opens).
    pub start_ms: u64,
    /// Lifetime of the first ref, ms.
    pub first_ms: u64,
    /// Lifetime of every later ref, ms.
    pub next_ms: u64,
    /// Refs in the batch (at least 1).
    pub count: usize,
}

/// What a phone's scan of a ref finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefStatus {
    /// The page shows it right now.
    Valid,
    /// No page ever showed it (or it is not shown yet): the phone cannot
    /// know it.
    NeverShown,
    /// It was shown, but its window is over or it was superseded.
    Expired,
}

impl RefSchedule {
    /// The window `[from, until)` of ref `index`, or `None` past the batch.
    pub fn window(&self, index: usize) -> Option<(u64, u64)> {
        if index >= self.count {
            return None;
        }
        let from = if index == 0 { self.start_ms } else { self.start_ms + self.first_ms + (index as u64 - 1) * self.next_ms };
        let len = if index == 0 { self.first_ms } else { self.next_ms };
        Some((from, from + len))
    }

    /// When the last ref's window closes.
    pub fn end_ms(&self) -> u64 {
        match self.count {
            0 => self.start_ms,
            n => self.start_ms + self.first_ms + (n as u64 - 1) * self.next_ms,
        }
    }

    /// The ref shown at `now_ms`, or `None` once the batch is used up (or
    /// before it starts).
    pub fn index_at(&self, now_ms: u64) -> Option<usize> {
        if now_ms < self.start_ms || now_ms >= self.end_ms() {
            return None;
        }
        let since = now_ms - self.start_ms;
        if since < self.first_ms {
            return Some(0);
        }
        if self.next_ms == 0 {
            return None;
        }
        Some(1 + ((since - self.first_ms) / self.next_ms) as usize)
    }

    /// When the ref shown at `now_ms` gives way to the next (or to
    /// `UNPAIRED_IDLE`); `None` once the batch is used up.
    pub fn next_change_ms(&self, now_ms: u64) -> Option<u64> {
        self.index_at(now_ms).and_then(|i| self.window(i)).map(|(_, until)| until)
    }

    /// Validity of ref `index` at `now_ms`, for a page that stopped showing
    /// this batch at `ended_ms` (it paired, left, or got a new batch), or is
    /// still showing it (`None`).
    pub fn status(&self, index: usize, now_ms: u64, ended_ms: Option<u64>) -> RefStatus {
        let Some((from, until)) = self.window(index) else {
            return RefStatus::NeverShown;
        };
        let stopped = ended_ms.unwrap_or(u64::MAX);
        if now_ms < from || from >= stopped {
            RefStatus::NeverShown
        } else if now_ms < until && ended_ms.is_none() {
            RefStatus::Valid
        } else {
            RefStatus::Expired
        }
    }
}

/// A fresh ref, shaped like the real ones (`2@` then base64).
pub fn new_ref(rng: &mut impl RngCore) -> String {
    let mut bytes = [0u8; 48];
    rng.fill_bytes(&mut bytes);
    format!("2@{}", B64.encode(bytes))
}

/// The keys a page reported in its hello; a scanned QR string must carry
/// exactly these. Keys are standard base64 of 32 bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct PageKeys {
    /// Noise static public key, base64.
    pub noise: String,
    /// Signal identity public key, base64.
    pub identity: String,
    /// ADV secret key, base64.
    pub adv: String,
    /// Device platform (`WEB`).
    pub platform: String,
}

impl PageKeys {
    /// Checks that each key is base64 of 32 bytes and the platform is a
    /// short word; returns what is wrong otherwise.
    pub fn validate(&self) -> Result<(), String> {
        for (name, key) in [("noise", &self.noise), ("identity", &self.identity), ("adv", &self.adv)] {
            match B64.decode(key) {
                Ok(bytes) if bytes.len() == 32 => {}
                _ => return Err(format!("{name} key is not base64 of 32 bytes")),
            }
        }
        let platform_ok = (1..=16).contains(&self.platform.len()) && self.platform.bytes().all(|b| b.is_ascii_alphanumeric());
        if !platform_ok {
            return Err("platform is not a short word".into());
        }
        Ok(())
    }
}

/// A scanned QR string: `ref,staticKeyB64,identityKeyB64,advSecretKey,platform`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrString<'a> {
    /// The ref.
    pub qr_ref: &'a str,
    /// The four fields after the ref.
    pub keys: [&'a str; 4],
}

impl<'a> QrString<'a> {
    /// Splits a QR string into its five fields; `None` unless there are
    /// exactly five, none empty.
    pub fn parse(s: &'a str) -> Option<Self> {
        let mut parts = s.trim().split(',');
        let mut fields = [""; 5];
        for f in &mut fields {
            *f = parts.next().filter(|p| !p.is_empty())?;
        }
        if parts.next().is_some() {
            return None;
        }
        let [qr_ref, noise, identity, adv, platform] = fields;
        Some(Self { qr_ref, keys: [noise, identity, adv, platform] })
    }

    /// True if the four key fields are the ones `keys` reported.
    pub fn matches(&self, keys: &PageKeys) -> bool {
        self.keys == [keys.noise.as_str(), keys.identity.as_str(), keys.adv.as_str(), keys.platform.as_str()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched() -> RefSchedule {
        RefSchedule { start_ms: 1_000, first_ms: 60_000, next_ms: 20_000, count: 6 }
    }

    #[test]
    fn first_ref_lives_first_then_each_next() {
        let s = sched();
        assert_eq!(s.window(0), Some((1_000, 61_000)));
        assert_eq!(s.window(1), Some((61_000, 81_000)));
        assert_eq!(s.window(5), Some((141_000, 161_000)));
        assert_eq!(s.window(6), None);
        assert_eq!(s.end_ms(), 161_000);
        assert_eq!(s.index_at(999), None);
        assert_eq!(s.index_at(1_000), Some(0));
        assert_eq!(s.index_at(60_999), Some(0));
        assert_eq!(s.index_at(61_000), Some(1));
        assert_eq!(s.index_at(160_999), Some(5));
        assert_eq!(s.index_at(161_000), None);
        assert_eq!(s.next_change_ms(1_000), Some(61_000));
        assert_eq!(s.next_change_ms(70_000), Some(81_000));
        assert_eq!(s.next_change_ms(161_000), None);
    }

    #[test]
    fn a_batch_of_one_ref_ends_with_it() {
        let s = RefSchedule { count: 1, ..sched() };
        assert_eq!(s.end_ms(), 61_000);
        assert_eq!(s.index_at(61_000), None);
        assert_eq!(s.window(1), None);
    }

    #[test]
    fn status_follows_the_windows() {
        let s = sched();
        assert_eq!(s.status(0, 30_000, None), RefStatus::Valid);
        assert_eq!(s.status(1, 30_000, None), RefStatus::NeverShown);
        assert_eq!(s.status(0, 61_000, None), RefStatus::Expired);
        assert_eq!(s.status(1, 61_000, None), RefStatus::Valid);
        assert_eq!(s.status(5, 200_000, None), RefStatus::Expired);
        assert_eq!(s.status(6, 30_000, None), RefStatus::NeverShown);
    }

    #[test]
    fn a_page_that_stopped_showing_a_batch_ends_all_its_refs() {
        let s = sched();
        // Paired (or left) at 70 s: ref 1 was on screen, ref 2 never.
        assert_eq!(s.status(1, 75_000, Some(70_000)), RefStatus::Expired);
        assert_eq!(s.status(0, 75_000, Some(70_000)), RefStatus::Expired);
        assert_eq!(s.status(2, 85_000, Some(70_000)), RefStatus::NeverShown);
    }

    #[test]
    fn refs_look_real_and_differ() {
        let mut rng = rand::thread_rng();
        let (a, b) = (new_ref(&mut rng), new_ref(&mut rng));
        assert!(a.starts_with("2@") && !a.contains(','));
        assert_ne!(a, b);
    }

    #[test]
    fn qr_strings_have_exactly_five_fields() {
        let q = QrString::parse("2@abc,Tk9JU0U=,SUQ=,QURW,WEB");
        assert_eq!(q, Some(QrString { qr_ref: "2@abc", keys: ["Tk9JU0U=", "SUQ=", "QURW", "WEB"] }));
        assert_eq!(QrString::parse("2@abc,a,b,c"), None);
        assert_eq!(QrString::parse("2@abc,a,b,c,WEB,extra"), None);
        assert_eq!(QrString::parse("2@abc,a,,c,WEB"), None);
        assert_eq!(QrString::parse(""), None);
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64() {
        let k32 = B64.encode([7u8; 32]);
        let good = PageKeys { noise: k32.clone(), identity: k32.clone(), adv: k32.clone(), platform: "WEB".into() };
        assert_eq!(good.validate(), Ok(()));
        let short = PageKeys { adv: B64.encode([1u8; 16]), ..good.clone() };
        assert!(short.validate().is_err());
        let q = format!("2@r,{k32},{k32},{k32},WEB");
        assert!(QrString::parse(&q).is_some_and(|q| q.matches(&good)));
        let q = format!("2@r,{k32},{k32},{k32},ANDROID");
        assert!(QrString::parse(&q).is_some_and(|q| !q.matches(&good)));
    }
}
