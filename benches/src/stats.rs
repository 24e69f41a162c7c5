//! The two statistics the report is made of: the median over rounds and the ratio.
//!
//! The median, not the mean, because one round disturbed by something else on the
//! machine (a compile, a cron job) should not move the result; with three rounds it
//! simply drops the best and the worst.

/// The median of `values`, or `None` when there are none. With an even count it is
/// the mean of the two middle values. NaNs are not expected (the inputs are parsed
/// numbers) and sort last.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let mid = sorted.len() / 2;
    let m = if sorted.len() % 2 == 1 { sorted[mid] } else { (sorted[mid - 1] + sorted[mid]) / 2.0 };
    debug_assert!(sorted[0] <= m && m <= sorted[sorted.len() - 1]);
    Some(m)
}

/// The median of one figure over `items` (ops/s over the rounds, say): every report
/// takes its medians column by column, so a round that was fast but slow to answer
/// does not lend both figures to the summary.
pub fn median_of<T>(items: &[T], figure: impl Fn(&T) -> f64) -> Option<f64> {
    median(&items.iter().map(figure).collect::<Vec<_>>())
}

/// `numerator / denominator`, or `None` when the denominator is not a positive
/// number (a ratio against zero ops/s says nothing).
pub fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    if denominator > 0.0 && numerator.is_finite() && denominator.is_finite() {
        Some(numerator / denominator)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_count_is_the_middle_value() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[5.0]), Some(5.0));
        // An outlier round does not move it.
        assert_eq!(median(&[100.0, 101.0, 10.0]), Some(100.0));
    }

    #[test]
    fn median_of_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn median_of_nothing_is_none() {
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn median_of_takes_one_figure_of_each_item() {
        let rounds = [(1.0, 30.0), (3.0, 10.0), (2.0, 20.0)];
        assert_eq!(median_of(&rounds, |r| r.0), Some(2.0));
        assert_eq!(median_of(&rounds, |r| r.1), Some(20.0));
        assert_eq!(median_of(&rounds[..0], |r| r.0), None);
    }

    #[test]
    fn ratio_refuses_a_zero_denominator() {
        assert_eq!(ratio(10.0, 4.0), Some(2.5));
        assert_eq!(ratio(10.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
    }
}
