//! Minimum-cost linear assignment on rectangular `f64` cost matrices.
//!
//! This is the shortest-augmenting-path variant of the Jonker–Volgenant algorithm described by
//! D. F. Crouse, "On implementing 2D rectangular assignment algorithms", IEEE Transactions on
//! Aerospace and Electronic Systems 52(4), 2016 — the algorithm behind
//! `scipy.optimize.linear_sum_assignment`. It has the same contract as scipy's function:
//!
//! - an `r × c` matrix assigns `min(r, c)` pairs, every row (if `r <= c`) or every column (if
//!   `r > c`) exactly once, minimising the sum of the chosen costs;
//! - `+∞` entries mark forbidden pairs; if no complete assignment of finite cost exists the
//!   problem is infeasible and an error is returned;
//! - `NaN` and `-∞` entries are invalid input;
//! - a matrix with zero rows or columns has the empty assignment, of cost 0.
//!
//! The optimal *total cost* is unique; when several assignments reach it (ties), the one
//! returned may differ from scipy's. Tie-breaking follows the same rules as Crouse's
//! algorithm (prefer an unassigned column among equally short paths, then the lowest index in
//! scan order), so in practice the pairs usually coincide as well.

use crate::{Error, Result};
use serde::Serialize;

/// An optimal assignment of rows to columns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assignment {
    /// The assigned `(row, column)` pairs in increasing row order; `min(rows, cols)` of them.
    pub pairs: Vec<(usize, usize)>,
    /// Sum of the costs of the assigned pairs (summed in row order).
    pub total_cost: f64,
}

/// Solves the rectangular linear sum assignment problem for the `rows × cols` cost matrix
/// stored row-major in `cost`, minimising the total cost.
///
/// # Errors
///
/// `cost.len() != rows * cols`; a `NaN` or `-∞` entry; no complete assignment with
/// finite total cost (too many `+∞` entries).
///
/// ```
/// use vertebra_core::metrics::linear_sum_assignment;
/// // 2 workers × 3 jobs.
/// let a = linear_sum_assignment(&[4.0, 1.0, 3.0, 2.0, 0.0, 5.0], 2, 3).unwrap();
/// assert_eq!(a.pairs, vec![(0, 1), (1, 0)]);
/// assert_eq!(a.total_cost, 3.0);
/// ```
pub fn linear_sum_assignment(cost: &[f64], rows: usize, cols: usize) -> Result<Assignment> {
    let n = rows.checked_mul(cols).ok_or_else(|| {
        Error::InvalidArgument(format!("cost matrix {rows} × {cols} is too large"))
    })?;
    if cost.len() != n {
        return Err(Error::InvalidArgument(format!(
            "cost matrix has {} entries, expected {rows} × {cols} = {n}",
            cost.len()
        )));
    }
    if let Some(i) = cost
        .iter()
        .position(|c| c.is_nan() || *c == f64::NEG_INFINITY)
    {
        return Err(Error::InvalidArgument(format!(
            "cost matrix entry ({}, {}) is {}; costs must be finite or +inf (forbidden)",
            i / cols,
            i % cols,
            cost[i]
        )));
    }
    if rows == 0 || cols == 0 {
        return Ok(Assignment {
            pairs: Vec::new(),
            total_cost: 0.0,
        });
    }

    // The solver needs at least as many columns as rows; solve the transpose otherwise.
    let transposed = rows > cols;
    let col_for_row = if transposed {
        let mut t = vec![0.0; n];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = cost[r * cols + c];
            }
        }
        Solver::new(cols, rows, &t).solve()
    } else {
        Solver::new(rows, cols, cost).solve()
    }
    .ok_or_else(|| {
        Error::InvalidArgument(
            "cost matrix is infeasible: no complete assignment has a finite cost".into(),
        )
    })?;

    let mut pairs: Vec<(usize, usize)> = if transposed {
        // Rows of the transpose are our columns.
        col_for_row
            .iter()
            .enumerate()
            .map(|(c, &r)| (r, c))
            .collect()
    } else {
        col_for_row
            .iter()
            .enumerate()
            .map(|(r, &c)| (r, c))
            .collect()
    };
    pairs.sort_unstable();
    let total_cost = pairs.iter().map(|&(r, c)| cost[r * cols + c]).sum();
    Ok(Assignment { pairs, total_cost })
}

/// Marks "no row/column" in the solver's index arrays.
const NONE: usize = usize::MAX;

/// State of the shortest-augmenting-path solver for an `nr × nc` matrix with `nr <= nc`.
struct Solver<'a> {
    nr: usize,
    nc: usize,
    cost: &'a [f64],
    /// Row duals.
    u: Vec<f64>,
    /// Column duals.
    v: Vec<f64>,
    /// Length of the shortest alternating path found so far to each column.
    shortest: Vec<f64>,
    /// Predecessor row of each column on the shortest path tree.
    path: Vec<usize>,
    col_for_row: Vec<usize>,
    row_for_col: Vec<usize>,
    /// Rows / columns reached by the current Dijkstra search.
    row_seen: Vec<bool>,
    col_seen: Vec<bool>,
    /// Columns not yet reached, first `remaining_len` entries valid.
    remaining: Vec<usize>,
}

impl<'a> Solver<'a> {
    fn new(nr: usize, nc: usize, cost: &'a [f64]) -> Self {
        debug_assert!(nr <= nc && cost.len() == nr * nc);
        Solver {
            nr,
            nc,
            cost,
            u: vec![0.0; nr],
            v: vec![0.0; nc],
            shortest: vec![f64::INFINITY; nc],
            path: vec![NONE; nc],
            col_for_row: vec![NONE; nr],
            row_for_col: vec![NONE; nc],
            row_seen: vec![false; nr],
            col_seen: vec![false; nc],
            remaining: vec![0; nc],
        }
    }

    /// Assigns every row; returns the column of each row, or `None` if infeasible.
    fn solve(mut self) -> Option<Vec<usize>> {
        for cur_row in 0..self.nr {
            let (sink, min_val) = self.augmenting_path(cur_row)?;

            // Update the duals so that reduced costs stay non-negative.
            self.u[cur_row] += min_val;
            for i in 0..self.nr {
                if self.row_seen[i] && i != cur_row {
                    self.u[i] += min_val - self.shortest[self.col_for_row[i]];
                }
            }
            for j in 0..self.nc {
                if self.col_seen[j] {
                    self.v[j] -= min_val - self.shortest[j];
                }
            }

            // Flip the alternating path ending at `sink`.
            let mut j = sink;
            loop {
                let i = self.path[j];
                self.row_for_col[j] = i;
                std::mem::swap(&mut self.col_for_row[i], &mut j);
                if i == cur_row {
                    break;
                }
            }
        }
        Some(self.col_for_row)
    }

    /// Dijkstra on reduced costs from `cur_row` to the nearest unassigned column. Returns the
    /// sink column and the path length, or `None` when only infinite-cost paths remain.
    fn augmenting_path(&mut self, cur_row: usize) -> Option<(usize, f64)> {
        let nc = self.nc;
        let mut remaining_len = nc;
        // Reverse order, as in Crouse's implementation, so ties resolve the same way.
        for (it, r) in self.remaining.iter_mut().enumerate() {
            *r = nc - it - 1;
        }
        self.row_seen.fill(false);
        self.col_seen.fill(false);
        self.shortest.fill(f64::INFINITY);

        let mut min_val = 0.0;
        let mut i = cur_row;
        loop {
            self.row_seen[i] = true;
            let mut lowest = f64::INFINITY;
            let mut index = NONE;
            for it in 0..remaining_len {
                let j = self.remaining[it];
                let r = min_val + self.cost[i * nc + j] - self.u[i] - self.v[j];
                if r < self.shortest[j] {
                    self.path[j] = i;
                    self.shortest[j] = r;
                }
                if self.shortest[j] < lowest
                    || (self.shortest[j] == lowest && self.row_for_col[j] == NONE)
                {
                    lowest = self.shortest[j];
                    index = it;
                }
            }
            min_val = lowest;
            if min_val == f64::INFINITY || index == NONE {
                return None;
            }
            let j = self.remaining[index];
            self.col_seen[j] = true;
            remaining_len -= 1;
            self.remaining[index] = self.remaining[remaining_len];
            if self.row_for_col[j] == NONE {
                return Some((j, min_val));
            }
            i = self.row_for_col[j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exhaustive minimum over all injective maps of the smaller side into the larger.
    fn brute_force(cost: &[f64], rows: usize, cols: usize) -> f64 {
        fn rec(cost: &[f64], rows: usize, cols: usize, r: usize, used: &mut [bool]) -> f64 {
            if r == rows {
                return 0.0;
            }
            let mut best = f64::INFINITY;
            for c in 0..cols {
                if !used[c] {
                    used[c] = true;
                    best = best.min(cost[r * cols + c] + rec(cost, rows, cols, r + 1, used));
                    used[c] = false;
                }
            }
            best
        }
        if rows <= cols {
            rec(cost, rows, cols, 0, &mut vec![false; cols])
        } else {
            let mut t = vec![0.0; rows * cols];
            for r in 0..rows {
                for c in 0..cols {
                    t[c * rows + r] = cost[r * cols + c];
                }
            }
            rec(&t, cols, rows, 0, &mut vec![false; rows])
        }
    }

    #[test]
    fn matches_brute_force_on_small_matrices() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..300 {
            let rows = rng.random_range(1..=5);
            let cols = rng.random_range(1..=5);
            // Small integer costs produce many ties.
            let cost: Vec<f64> = (0..rows * cols)
                .map(|_| f64::from(rng.random_range(-3i32..4)) * 0.5)
                .collect();
            let a = linear_sum_assignment(&cost, rows, cols).unwrap();
            assert_eq!(a.pairs.len(), rows.min(cols));
            let mut rows_used = vec![false; rows];
            let mut cols_used = vec![false; cols];
            for &(r, c) in &a.pairs {
                assert!(!rows_used[r] && !cols_used[c], "{:?}", a.pairs);
                rows_used[r] = true;
                cols_used[c] = true;
            }
            assert!((a.total_cost - brute_force(&cost, rows, cols)).abs() < 1e-12);
        }
    }

    #[test]
    fn forbidden_entries_are_avoided_and_infeasible_is_an_error() {
        let inf = f64::INFINITY;
        let a = linear_sum_assignment(&[inf, 1.0, 2.0, inf], 2, 2).unwrap();
        assert_eq!(a.pairs, vec![(0, 1), (1, 0)]);
        assert_eq!(a.total_cost, 3.0);
        let err = linear_sum_assignment(&[inf, 1.0, inf, 2.0], 2, 2).unwrap_err();
        assert!(err.to_string().contains("infeasible"), "{err}");
    }

    #[test]
    fn invalid_input_is_rejected() {
        assert!(linear_sum_assignment(&[1.0, f64::NAN], 1, 2).is_err());
        assert!(linear_sum_assignment(&[1.0, f64::NEG_INFINITY], 1, 2).is_err());
        assert!(linear_sum_assignment(&[1.0, 2.0, 3.0], 2, 2).is_err());
        assert!(linear_sum_assignment(&[], usize::MAX, 2).is_err());
    }

    #[test]
    fn empty_matrices_have_the_empty_assignment() {
        for (r, c) in [(0, 0), (0, 3), (4, 0)] {
            let a = linear_sum_assignment(&[], r, c).unwrap();
            assert!(a.pairs.is_empty());
            assert_eq!(a.total_cost, 0.0);
        }
    }

    #[test]
    fn tall_matrices_assign_every_column() {
        let a = linear_sum_assignment(&[5.0, 1.0, 0.0, 2.0, 3.0, 0.5], 3, 2).unwrap();
        assert_eq!(a.pairs, vec![(1, 0), (2, 1)]);
        assert_eq!(a.total_cost, 0.5);
    }
}
