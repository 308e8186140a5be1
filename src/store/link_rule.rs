//! The rule both link tables keep (`contacts` and `companies`): one local row per HubSpot
//! record. A page's links are checked against the rows that hold their HubSpot ids and against
//! the page's earlier rows; the real save and a dry run's check use the same rule.

use std::collections::HashMap;
use std::hash::Hash;

/// A local row's link to a HubSpot record, as a page would save it.
pub(super) trait Link {
    /// The local row's id.
    type Local: Copy + Eq;
    /// The HubSpot record's id.
    type Remote: Clone + Eq + Hash;
    /// A link refused because another row holds the record.
    type Clash;

    /// The local row.
    fn local(&self) -> Self::Local;
    /// The HubSpot record it is to be linked to.
    fn remote(&self) -> &Self::Remote;
    /// The record as text, as the holders' queries take it.
    fn remote_text(&self) -> &str;
    /// Whether the row takes a record it did not hold when it was read.
    fn changes(&self) -> bool;
    /// The refusal of this link, `holder` holding the record.
    fn clash(&self, holder: Self::Local) -> Self::Clash;
}

/// The HubSpot ids the rows take anew: a row keeping the id it holds clashes with no one new,
/// so only these need their holders read.
pub(super) fn changing_ids<R: Link>(rows: &[R]) -> Vec<&str> {
    rows.iter()
        .filter(|r| r.changes())
        .map(Link::remote_text)
        .collect()
}

/// `holders` (read from the table) with, after them, the rows an earlier page of the same dry
/// run would have linked to the ids `rows` take anew (`earlier`, HubSpot id → row): later
/// entries win in [`split_clashes`], as the real run's database would hold those links by then.
pub(super) fn with_earlier<R: Link>(
    rows: &[R],
    mut holders: Vec<(R::Local, R::Remote)>,
    earlier: &HashMap<R::Remote, R::Local>,
) -> Vec<(R::Local, R::Remote)> {
    holders.extend(rows.iter().filter(|r| r.changes()).filter_map(|r| {
        earlier
            .get(r.remote())
            .map(|holder| (*holder, r.remote().clone()))
    }));
    holders
}

/// Splits a page into the rows that may take their HubSpot record and those that clash with a
/// holder: another row of the table (`holders`, local row and record), or an earlier row of
/// the same page.
pub(super) fn split_clashes<R: Link>(
    rows: &[R],
    holders: Vec<(R::Local, R::Remote)>,
) -> (Vec<&R>, Vec<R::Clash>) {
    let holders: HashMap<R::Remote, R::Local> =
        holders.into_iter().map(|(id, hs)| (hs, id)).collect();
    let mut owner: HashMap<&R::Remote, R::Local> = HashMap::with_capacity(rows.len());
    let mut keep = Vec::with_capacity(rows.len());
    let mut clashes = Vec::new();
    for row in rows {
        let holder = holders
            .get(row.remote())
            .copied()
            .filter(|holder| *holder != row.local())
            .or_else(|| owner.get(row.remote()).copied());
        match holder {
            Some(holder) => clashes.push(row.clash(holder)),
            None => {
                owner.insert(row.remote(), row.local());
                keep.push(row);
            }
        }
    }
    (keep, clashes)
}
