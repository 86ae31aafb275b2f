//! The Campaign shell's store I/O: one campaign's recipients and record, and
//! its number's (session's) pacing state, day counts, opt-out list and
//! contacts, in sled. Errors come back as text for
//! the machine (which pauses with `store_error` on any of them).

use std::collections::HashMap;

use crate::campaign::{CampaignRecord, RecipientRecord};
use crate::policy::campaign::{Change, Contact, Entry};
use crate::policy::pacing::{DayCount, NumberRecord};
use crate::store::Store;

/// One campaign's records (see the module docs).
pub(super) struct Records {
    pub(super) id: String,
    pub(super) session: String,
    store: Store,
    /// The recipient last written: event payloads name its phone and id,
    /// and a send uses the record its `SENDING` write left here.
    pub(super) last: Option<RecipientRecord>,
    /// Recipient by phone (E.164 digits, no `+`), to attribute replies;
    /// filled by [`Records::load`].
    pub(super) by_phone: HashMap<String, u32>,
}

impl Records {
    pub(super) fn new(record: &CampaignRecord, store: Store) -> Self {
        Self { id: record.id.clone(), session: record.session.clone(), store, last: None, by_phone: HashMap::new() }
    }

    /// Every recipient's index and the part the machine keeps in memory.
    pub(super) fn load(&mut self) -> Result<Vec<(u32, Entry)>, String> {
        let recipients = self.store.recipients(&self.id).map_err(|e| e.to_string())?;
        self.by_phone = recipients.iter().map(|r| (r.phone.trim_start_matches('+').to_string(), r.idx)).collect();
        Ok(recipients.iter().map(|r| (r.idx, Entry::of(r))).collect())
    }

    /// Reads recipient `idx`, applies `change` at `now_ms` and stores it
    /// (flushed if `flush`); keeps it as [`Records::last`].
    pub(super) fn write_recipient(&mut self, idx: u32, change: &Change, now_ms: u64, flush: bool) -> Result<(), String> {
        let mut r = self.read(idx)?;
        change.apply(&mut r, now_ms);
        self.store.put_recipient_owned(&self.session, &self.id, &r, flush).map_err(|e| e.to_string())?;
        self.last = Some(r);
        Ok(())
    }

    /// Recipient `idx` as stored. Errors: unreadable, or not in the store.
    pub(super) fn read(&self, idx: u32) -> Result<RecipientRecord, String> {
        self.store.recipient(&self.id, idx).map_err(|e| e.to_string())?.ok_or_else(|| format!("recipient {idx} is not in the store"))
    }

    /// The recipient about to be sent under `message_id`: the record its
    /// `SENDING` write just left (so the store is not read again), else as
    /// stored.
    pub(super) fn for_send(&mut self, idx: u32, message_id: &str) -> Result<RecipientRecord, String> {
        match self.last.take().filter(|r| r.idx == idx && r.message_id.as_deref() == Some(message_id)) {
            Some(r) => Ok(r),
            None => self.read(idx),
        }
    }

    pub(super) fn write_campaign(&self, record: &CampaignRecord, flush: bool) -> Result<(), String> {
        self.store.put_campaign_owned(record, flush).map_err(|e| e.to_string())
    }

    /// Counts one send of the number on `day` (and a first contact) and
    /// stores its pacing state, flushed.
    pub(super) fn count_send(&self, day: &str, number: &NumberRecord, first_contact: bool) -> Result<(), String> {
        self.store.count_number_send(&self.session, day, number, first_contact).map_err(|e| e.to_string())
    }

    /// The number's sends on `day`.
    pub(super) fn day_count(&self, day: &str) -> Result<DayCount, String> {
        self.store.day_count(&self.session, day).map_err(|e| e.to_string())
    }

    /// The number's stored pacing state.
    pub(super) fn number(&self) -> Result<NumberRecord, String> {
        self.store.number(&self.session).map_err(|e| e.to_string())
    }

    /// Stores the number's state after a send ended, not flushed; false if
    /// the store did not take it (see `Shell::number_ended`).
    pub(super) fn number_ended(&self, number: &NumberRecord) -> bool {
        self.store.put_number(&self.session, number, false).is_ok()
    }

    /// Whether recipient `idx`'s contact is on the opt-out list, and
    /// whether it ever wrote to the account.
    pub(super) fn contact(&self, idx: u32) -> Result<Contact, String> {
        let r = self.read(idx)?;
        let phone = r.phone.trim_start_matches('+');
        let opted_out = self.store.opt_out(&self.session, phone).map_err(|e| e.to_string())?.is_some();
        let wrote = self.store.has_written(&self.session, phone).map_err(|e| e.to_string())?;
        Ok(Contact { opted_out, first_contact: !wrote })
    }

    /// No store write has failed since the last flush that succeeded.
    pub(super) fn store_ok(&self) -> bool {
        self.store.failure().is_none()
    }
}
