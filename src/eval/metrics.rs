//! The paper's figures, as pure functions: confusion matrix; per-class accuracy,
//! sensitivity, specificity, F1 (one class against the rest); macro and weighted averages;
//! one-vs-rest ROC curves and AUC; and McNemar's test of the model against a reader.

use serde::Serialize;

/// Per-class figures (one class against the rest).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassFigures {
    /// Class name.
    pub class: String,
    /// Heads of this class.
    pub support: usize,
    /// (TP + TN) / N.
    pub accuracy: f64,
    /// TP / (TP + FN).
    pub sensitivity: f64,
    /// TN / (TN + FP).
    pub specificity: f64,
    /// TP / (TP + FP).
    pub precision: f64,
    /// 2 · precision · sensitivity / (precision + sensitivity).
    pub f1: f64,
    /// Area under the one-vs-rest ROC curve.
    pub auc: f64,
}

/// Averages over classes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Averages {
    /// Mean of the per-class accuracy.
    pub accuracy: f64,
    /// Mean sensitivity.
    pub sensitivity: f64,
    /// Mean specificity.
    pub specificity: f64,
    /// Mean F1.
    pub f1: f64,
    /// Mean AUC.
    pub auc: f64,
}

/// The table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Table {
    /// Heads evaluated.
    pub heads: usize,
    /// Fraction whose predicted class is the true one.
    pub overall_accuracy: f64,
    /// Rows: true class; columns: predicted class.
    pub confusion: Vec<Vec<usize>>,
    /// Per class.
    pub per_class: Vec<ClassFigures>,
    /// Unweighted mean over classes.
    pub macro_average: Averages,
    /// Mean weighted by support.
    pub weighted_average: Averages,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

/// Area under the ROC curve of `scores` for `positive` labels: the probability that a random
/// positive scores above a random negative, ties counting half (Mann-Whitney).
pub fn auc(scores: &[f64], positive: &[bool]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Average ranks over ties.
    let mut ranks = vec![0.0; scores.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            ranks[idx[k]] = r;
        }
        i = j + 1;
    }
    let np = positive.iter().filter(|p| **p).count();
    let nn = positive.len() - np;
    if np == 0 || nn == 0 {
        return f64::NAN;
    }
    let sum: f64 = ranks
        .iter()
        .zip(positive)
        .filter(|(_, p)| **p)
        .map(|(r, _)| r)
        .sum();
    (sum - (np * (np + 1)) as f64 / 2.0) / (np * nn) as f64
}

/// ROC curve points (false positive rate, true positive rate), from (0, 0) to (1, 1),
/// one point per distinct score threshold.
/// Empty when there are no positives or no negatives (the curve is undefined).
pub fn roc(scores: &[f64], positive: &[bool]) -> Vec<(f64, f64)> {
    let np = positive.iter().filter(|p| **p).count() as f64;
    let nn = positive.iter().filter(|p| !**p).count() as f64;
    if np == 0.0 || nn == 0.0 {
        return Vec::new();
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut pts = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut i = 0;
    while i < idx.len() {
        let s = scores[idx[i]];
        while i < idx.len() && scores[idx[i]] == s {
            if positive[idx[i]] {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        pts.push((fp / nn, tp / np));
    }
    pts
}

/// The table for true classes, predicted classes and class probabilities (each row sums
/// to 1, `classes.len()` columns).
pub fn table(
    classes: &[&str],
    truth: &[usize],
    predicted: &[usize],
    probabilities: &[Vec<f64>],
) -> Table {
    let k = classes.len();
    let n = truth.len();
    let mut confusion = vec![vec![0usize; k]; k];
    for (&t, &p) in truth.iter().zip(predicted) {
        confusion[t][p] += 1;
    }
    let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
    let per_class: Vec<ClassFigures> = (0..k)
        .map(|c| {
            let tp = confusion[c][c];
            let fn_: usize = (0..k).filter(|&p| p != c).map(|p| confusion[c][p]).sum();
            let fp: usize = (0..k).filter(|&t| t != c).map(|t| confusion[t][c]).sum();
            let tn = n - tp - fn_ - fp;
            let sens = ratio(tp, tp + fn_);
            let prec = ratio(tp, tp + fp);
            let scores: Vec<f64> = probabilities.iter().map(|p| p[c]).collect();
            let pos: Vec<bool> = truth.iter().map(|&t| t == c).collect();
            ClassFigures {
                class: classes[c].to_owned(),
                support: tp + fn_,
                accuracy: ratio(tp + tn, n),
                sensitivity: sens,
                specificity: ratio(tn, tn + fp),
                precision: prec,
                f1: if prec + sens > 0.0 {
                    2.0 * prec * sens / (prec + sens)
                } else {
                    0.0
                },
                auc: auc(&scores, &pos),
            }
        })
        .collect();
    // Classes without a defined figure (NaN: no heads of that class, or no calls) and
    // zero-weight classes are left out of an average, not allowed to poison it.
    let avg = |w: &dyn Fn(&ClassFigures) -> f64| {
        let f = |g: fn(&ClassFigures) -> f64| {
            let (mut sum, mut total) = (0.0, 0.0);
            for c in &per_class {
                let (wc, v) = (w(c), g(c));
                if wc > 0.0 && v.is_finite() {
                    sum += wc * v;
                    total += wc;
                }
            }
            if total > 0.0 { sum / total } else { f64::NAN }
        };
        Averages {
            accuracy: f(|c| c.accuracy),
            sensitivity: f(|c| c.sensitivity),
            specificity: f(|c| c.specificity),
            f1: f(|c| c.f1),
            auc: f(|c| c.auc),
        }
    };
    Table {
        heads: n,
        overall_accuracy: ratio(correct, n),
        macro_average: avg(&|_| 1.0),
        weighted_average: avg(&|c| c.support as f64),
        confusion,
        per_class,
    }
}

/// McNemar's test of two raters on the same cases.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct McNemar {
    /// Cases both assessed.
    pub cases: usize,
    /// Model right, reader wrong.
    pub model_only_right: usize,
    /// Reader right, model wrong.
    pub reader_only_right: usize,
    /// χ² with continuity correction, (|b − c| − 1)² / (b + c).
    pub chi_square: f64,
    /// Two-sided p: exact binomial when b + c < 25, otherwise from χ² (1 df).
    pub p_value: f64,
    /// "exact binomial" or "chi-square, continuity corrected".
    pub method: String,
}

fn erfc(x: f64) -> f64 {
    // Numerical Recipes' erfc (Chebyshev), relative error < 1.2e-7.
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807
                                + t * (-1.13520398
                                    + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// McNemar's test from per-case correctness of the model and of the reader.
pub fn mcnemar(model_right: &[bool], reader_right: &[bool]) -> McNemar {
    let b = model_right
        .iter()
        .zip(reader_right)
        .filter(|(m, r)| **m && !**r)
        .count();
    let c = model_right
        .iter()
        .zip(reader_right)
        .filter(|(m, r)| !**m && **r)
        .count();
    let n = b + c;
    let chi = if n == 0 {
        0.0
    } else {
        ((b as f64 - c as f64).abs() - 1.0).max(0.0).powi(2) / n as f64
    };
    let (p, method) = if n < 25 {
        // Two-sided exact: 2 · P(X ≤ min(b, c)), X ~ Binomial(n, 1/2), capped at 1.
        let k = b.min(c);
        let mut term = 0.5f64.powi(n as i32); // C(n, 0) / 2^n
        let mut cdf = term;
        for i in 1..=k {
            term *= (n - i + 1) as f64 / i as f64;
            cdf += term;
        }
        ((2.0 * cdf).min(1.0), "exact binomial")
    } else {
        (erfc((chi / 2.0).sqrt()), "chi-square, continuity corrected")
    };
    McNemar {
        cases: model_right.len(),
        model_only_right: b,
        reader_only_right: c,
        chi_square: chi,
        p_value: p,
        method: method.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn table_by_hand() {
        // 6 heads: truth 0 0 1 1 2 2; predicted 0 1 1 1 2 0.
        let truth = [0, 0, 1, 1, 2, 2];
        let pred = [0, 1, 1, 1, 2, 0];
        let probs: Vec<Vec<f64>> = vec![
            vec![0.8, 0.1, 0.1],
            vec![0.3, 0.6, 0.1],
            vec![0.1, 0.7, 0.2],
            vec![0.2, 0.5, 0.3],
            vec![0.1, 0.2, 0.7],
            vec![0.5, 0.1, 0.4],
        ];
        let t = table(&["0", "I", "II"], &truth, &pred, &probs);
        assert_eq!(
            t.confusion,
            vec![vec![1, 1, 0], vec![0, 2, 0], vec![1, 0, 1]]
        );
        assert!(close(t.overall_accuracy, 4.0 / 6.0));
        // Class 0: TP 1, FN 1, FP 1, TN 3.
        let c0 = &t.per_class[0];
        assert!(close(c0.sensitivity, 0.5) && close(c0.specificity, 0.75));
        assert!(close(c0.precision, 0.5) && close(c0.f1, 0.5) && close(c0.accuracy, 4.0 / 6.0));
        // Class I: TP 2, FN 0, FP 1, TN 3: precision 2/3, F1 0.8.
        let c1 = &t.per_class[1];
        assert!(close(c1.sensitivity, 1.0) && close(c1.specificity, 0.75));
        assert!(close(c1.f1, 0.8));
        // AUC of class 0: positives score 0.8, 0.3; negatives 0.1 0.2 0.1 0.5.
        // Pairs won: 0.8 beats all 4; 0.3 beats 3 → 7/8.
        assert!(close(c0.auc, 7.0 / 8.0));
        // Macro sensitivity: (0.5 + 1 + 0.5) / 3; weighted with supports 2, 2, 2 the same.
        assert!(close(t.macro_average.sensitivity, 2.0 / 3.0));
        assert!(close(t.weighted_average.sensitivity, 2.0 / 3.0));
        // A class with no heads leaves the averages defined.
        let t = table(
            &["0", "I", "II"],
            &[0, 1],
            &[0, 1],
            &[vec![0.9, 0.1, 0.0], vec![0.1, 0.9, 0.0]],
        );
        assert!(t.per_class[2].sensitivity.is_nan());
        assert!(close(t.macro_average.sensitivity, 1.0));
        assert!(close(t.weighted_average.sensitivity, 1.0));
    }

    #[test]
    fn auc_with_ties_and_roc_ends() {
        assert!(close(auc(&[0.5, 0.5], &[true, false]), 0.5));
        assert!(close(auc(&[0.9, 0.1], &[true, false]), 1.0));
        let r = roc(&[0.9, 0.4, 0.4, 0.1], &[true, true, false, false]);
        assert_eq!(r.first(), Some(&(0.0, 0.0)));
        assert_eq!(r.last(), Some(&(1.0, 1.0)));
        assert_eq!(r[1], (0.0, 0.5));
        assert_eq!(r[2], (0.5, 1.0));
        assert!(roc(&[0.3, 0.4], &[false, false]).is_empty());
    }

    #[test]
    fn mcnemar_by_hand() {
        // b = 3 (model only right), c = 0: exact p = 2 · (1/8) = 0.25.
        let m = [true, true, true, true, false];
        let r = [false, false, false, true, false];
        let t = mcnemar(&m, &r);
        assert_eq!((t.model_only_right, t.reader_only_right), (3, 0));
        assert!(close(t.p_value, 0.25), "{t:?}");
        assert!(close(t.chi_square, 4.0 / 3.0));
        // Large discordance: b = 30, c = 10 → χ² = 19² / 40 = 9.025, p = erfc(√4.5125).
        let mut m = vec![true; 30];
        m.extend(vec![false; 10]);
        let mut r = vec![false; 30];
        r.extend(vec![true; 10]);
        let t = mcnemar(&m, &r);
        assert!(close(t.chi_square, 9.025));
        // p for χ²(1) = 9.025 is 0.002663 (tables).
        assert!((t.p_value - 0.002663).abs() < 2e-5, "{t:?}");
        assert_eq!(t.method, "chi-square, continuity corrected");
    }
}
