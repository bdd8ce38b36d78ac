//! A linearizability checker for the history of one register (one key): Wing and Gong's
//! search for a legal order, with Lowe's memoisation of (operations done, value) so
//! equivalent branches are explored once.
//!
//! An operation is invoked at `call` and answered at `ret`; it must take effect at one
//! instant between the two. An operation with no answer (`ret: None`: the client timed
//! out, the connection broke) may have taken effect at any instant after `call`, or not
//! at all: the caller drops the ones known not to have happened (a read, or a write the
//! watch history never saw), and the checker may place the rest anywhere after their call.

use std::collections::HashSet;

/// A value is an id; `None` is "no such key".
pub type Value = Option<u64>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(u64),
    Get(Value),
    /// Compare-and-swap: if the value is `expect`, set `new`. `ok` is what the client was
    /// told, `None` when it was told nothing.
    Cas {
        expect: u64,
        new: u64,
        ok: Option<bool>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub op: Op,
    /// Invocation time (any monotonic unit).
    pub call: u64,
    /// Response time; `None` if the outcome is unknown.
    pub ret: Option<u64>,
}

/// The register's next value if `op` can take effect on `state` and give the answer the
/// client saw.
fn step(state: Value, op: &Op) -> Option<Value> {
    match *op {
        Op::Put(v) => Some(Some(v)),
        Op::Get(seen) => (seen == state).then_some(state),
        Op::Cas { expect, new, ok } => {
            let matches = state == Some(expect);
            match ok {
                Some(told) if told != matches => None,
                _ if matches => Some(Some(new)),
                _ => Some(state),
            }
        }
    }
}

/// Checks a history that starts from `initial`. On failure, says how far the longest
/// legal order got and which operations were left.
pub fn check(initial: Value, history: &[Call]) -> Result<(), String> {
    let mut ops: Vec<&Call> = history.iter().collect();
    ops.sort_by_key(|c| c.call);
    let n = ops.len();
    let ret: Vec<u64> = ops.iter().map(|c| c.ret.unwrap_or(u64::MAX)).collect();
    let mut done = vec![false; n];
    let mut bits = vec![0u64; n.div_ceil(64)];
    let mut memo: HashSet<(Vec<u64>, Value)> = HashSet::new();
    // The search path: (operation, value before it).
    let mut path: Vec<(usize, Value)> = Vec::with_capacity(n);
    let mut state = initial;
    let mut resume = 0;
    let mut best = 0;
    loop {
        if path.len() == n {
            return Ok(());
        }
        best = best.max(path.len());
        // An operation can come next only if no pending one was answered before it was
        // invoked.
        let min_ret = (0..n).filter(|i| !done[*i]).map(|i| ret[i]).min();
        let min_ret = min_ret.unwrap_or(u64::MAX);
        let mut advanced = false;
        for i in resume..n {
            if ops[i].call > min_ret {
                break;
            }
            if done[i] {
                continue;
            }
            let Some(next) = step(state, &ops[i].op) else {
                continue;
            };
            bits[i / 64] |= 1 << (i % 64);
            if memo.insert((bits.clone(), next)) {
                done[i] = true;
                path.push((i, state));
                state = next;
                advanced = true;
                break;
            }
            bits[i / 64] &= !(1 << (i % 64));
        }
        if advanced {
            resume = 0;
            continue;
        }
        let Some((i, before)) = path.pop() else {
            let left: Vec<&Call> = (0..n).filter(|i| !done[*i]).map(|i| ops[i]).collect();
            return Err(format!(
                "not linearizable: the longest legal order covers {best} of {n} operations; \
                 first ones it could not place: {:?}",
                &left[..left.len().min(6)]
            ));
        };
        done[i] = false;
        bits[i / 64] &= !(1 << (i % 64));
        state = before;
        resume = i + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(op: Op, call: u64, ret: u64) -> Call {
        Call {
            op,
            call,
            ret: Some(ret),
        }
    }

    #[test]
    fn sequential_and_concurrent_histories_pass() {
        let h = [
            c(Op::Put(1), 0, 1),
            c(Op::Get(Some(1)), 2, 3),
            c(
                Op::Cas {
                    expect: 1,
                    new: 2,
                    ok: Some(true),
                },
                4,
                5,
            ),
            c(Op::Get(Some(2)), 6, 7),
        ];
        assert!(check(None, &h).is_ok());
        // A read concurrent with a write may see either value.
        let h = [
            c(Op::Put(1), 0, 1),
            c(Op::Put(2), 2, 10),
            c(Op::Get(Some(1)), 3, 4),
            c(Op::Get(Some(2)), 5, 6),
        ];
        assert!(check(None, &h).is_ok());
    }

    #[test]
    fn stale_reads_and_lost_writes_fail() {
        // A read after a completed write sees the old value.
        let h = [
            c(Op::Put(1), 0, 1),
            c(Op::Put(2), 2, 3),
            c(Op::Get(Some(1)), 4, 5),
        ];
        assert!(check(None, &h).is_err());
        // Reads go backwards.
        let h = [
            c(Op::Put(1), 0, 1),
            c(Op::Put(2), 2, 20),
            c(Op::Get(Some(2)), 3, 4),
            c(Op::Get(Some(1)), 5, 6),
        ];
        assert!(check(None, &h).is_err());
        // A CAS reported as failed although the value matched.
        let h = [
            c(Op::Put(1), 0, 1),
            c(
                Op::Cas {
                    expect: 1,
                    new: 2,
                    ok: Some(false),
                },
                2,
                3,
            ),
        ];
        assert!(check(None, &h).is_err());
        // A value nobody wrote.
        assert!(check(None, &[c(Op::Get(Some(9)), 0, 1)]).is_err());
    }

    #[test]
    fn unknown_outcomes_may_land_late_or_not_at_all() {
        let lost = Call {
            op: Op::Put(2),
            call: 2,
            ret: None,
        };
        // Seen much later: fine, it took effect after its call.
        let h = [
            c(Op::Put(1), 0, 1),
            lost.clone(),
            c(Op::Get(Some(1)), 10, 11),
            c(Op::Get(Some(2)), 12, 13),
        ];
        assert!(check(None, &h).is_ok());
        // Never seen: fine too.
        let h = [
            c(Op::Put(1), 0, 1),
            lost.clone(),
            c(Op::Get(Some(1)), 10, 11),
        ];
        assert!(check(None, &h).is_ok());
        // But not before it was invoked.
        let h = [c(Op::Get(Some(2)), 0, 1), lost];
        assert!(check(None, &h).is_err());
    }

    #[test]
    fn a_long_concurrent_history_is_checked_quickly() {
        // 4 clients, 2,000 overlapping operations.
        let mut h = Vec::new();
        let mut value = None;
        for i in 0..2000u64 {
            let t = i * 10;
            if i % 3 == 0 {
                h.push(c(Op::Put(i), t, t + 25));
                value = Some(i);
            } else {
                // Reads overlap the write before them, so they may see either value.
                h.push(c(Op::Get(value), t, t + 25));
            }
        }
        assert!(check(None, &h).is_ok());
    }
}
