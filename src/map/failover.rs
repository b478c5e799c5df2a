//! Failover chains: which cell serves the tenants of a cell that is down.
//!
//! One rule, used twice: by validation (over the statuses the map gives, so
//! a map whose chains loop or dead-end is rejected) and by the `live` part
//! (over effective statuses, which overrides and health change between map
//! versions).

use super::CellId;

/// Where a failover chain led.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chain {
    /// `serving` serves; `path` are the down cells passed through, in
    /// order, starting with the first down one (empty when the start serves).
    Serves {
        /// The first cell of the chain that is not down.
        serving: CellId,
        /// Down cells passed through.
        path: Vec<CellId>,
    },
    /// The chain comes back to a down cell it already passed (`path` ends
    /// with the repeated cell).
    Loops {
        /// Down cells passed through, the repeated one last.
        path: Vec<CellId>,
    },
    /// The chain reaches a down cell that has no failover.
    DeadEnd {
        /// Down cells passed through, the last one without a failover.
        path: Vec<CellId>,
    },
}

/// Follows the chain from `start`: `start` itself when it is not down, else
/// its failover, and so on through down cells. `failover` gives a cell's
/// configured failover, `is_down` its status.
pub fn follow(
    start: CellId,
    failover: impl Fn(CellId) -> Option<CellId>,
    is_down: impl Fn(CellId) -> bool,
) -> Chain {
    let mut path = Vec::new();
    let mut cur = start;
    loop {
        if !is_down(cur) {
            return Chain::Serves { serving: cur, path };
        }
        if path.contains(&cur) {
            path.push(cur);
            return Chain::Loops { path };
        }
        path.push(cur);
        match failover(cur) {
            Some(next) => cur = next,
            None => return Chain::DeadEnd { path },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(down: &[u16], failover: &[Option<u16>], start: u16) -> Chain {
        follow(
            CellId(start),
            |c| failover[usize::from(c.0)].map(CellId),
            |c| down.contains(&c.0),
        )
    }

    #[test]
    fn follows_down_cells_to_a_serving_one() {
        let f = [Some(1), Some(2), None];
        assert_eq!(
            chain(&[], &f, 0),
            Chain::Serves {
                serving: CellId(0),
                path: vec![]
            }
        );
        assert_eq!(
            chain(&[0, 1], &f, 0),
            Chain::Serves {
                serving: CellId(2),
                path: vec![CellId(0), CellId(1)]
            }
        );
        assert_eq!(
            chain(&[0, 1, 2], &f, 0),
            Chain::DeadEnd {
                path: vec![CellId(0), CellId(1), CellId(2)]
            }
        );
        let looped = [Some(1), Some(0)];
        assert_eq!(
            chain(&[0, 1], &looped, 0),
            Chain::Loops {
                path: vec![CellId(0), CellId(1), CellId(0)]
            }
        );
    }
}
