//! A line diff between two versions' bodies, for the document page. Published HTML often
//! comes on few, very long lines, so lines longer than 60 bytes are also broken between tags (`><`) before
//! diffing. Common leading and trailing lines are trimmed first; the middle is diffed by
//! longest common subsequence when it is small enough ([`MAX_CELLS`]), and otherwise shown
//! as one removed block and one added block.

/// The largest LCS table (lines × lines) computed per diff.
pub const MAX_CELLS: usize = 4_000_000;

/// One line of the diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    /// In both.
    Same(&'a str),
    /// Only in the old body.
    Removed(&'a str),
    /// Only in the new body.
    Added(&'a str),
}

/// The text split into lines, with long lines also split between tags.
fn lines(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.len() <= 60 {
            out.push(line);
            continue;
        }
        let mut start = 0;
        for (i, _) in line.match_indices("><") {
            out.push(&line[start..=i]);
            start = i + 1;
        }
        out.push(&line[start..]);
    }
    out
}

/// The diff from `old` to `new`.
pub fn diff<'a>(old: &'a str, new: &'a str) -> Vec<Line<'a>> {
    let (a, b) = (lines(old), lines(new));
    let head = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let tail = a[head..]
        .iter()
        .rev()
        .zip(b[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (ma, mb) = (&a[head..a.len() - tail], &b[head..b.len() - tail]);
    let mut out: Vec<Line<'a>> = a[..head].iter().map(|l| Line::Same(l)).collect();
    if ma.len().saturating_mul(mb.len()) <= MAX_CELLS {
        out.extend(lcs(ma, mb));
    } else {
        out.extend(ma.iter().map(|l| Line::Removed(l)));
        out.extend(mb.iter().map(|l| Line::Added(l)));
    }
    out.extend(a[a.len() - tail..].iter().map(|l| Line::Same(l)));
    out
}

fn lcs<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<Line<'a>> {
    let w = b.len() + 1;
    // table[i * w + j]: LCS length of a[i..] and b[j..].
    let mut table = vec![0u32; (a.len() + 1) * w];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            table[i * w + j] = if a[i] == b[j] {
                table[(i + 1) * w + j + 1] + 1
            } else {
                table[(i + 1) * w + j].max(table[i * w + j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            out.push(Line::Same(a[i]));
            i += 1;
            j += 1;
        } else if table[(i + 1) * w + j] >= table[i * w + j + 1] {
            out.push(Line::Removed(a[i]));
            i += 1;
        } else {
            out.push(Line::Added(b[j]));
            j += 1;
        }
    }
    out.extend(a[i..].iter().map(|l| Line::Removed(l)));
    out.extend(b[j..].iter().map(|l| Line::Added(l)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Line::*;

    #[test]
    fn changed_lines_show_as_removed_then_added() {
        let d = diff("a\nb\nc\nd", "a\nB\nc\nd\ne");
        assert_eq!(
            d,
            vec![
                Same("a"),
                Removed("b"),
                Added("B"),
                Same("c"),
                Same("d"),
                Added("e")
            ]
        );
    }

    #[test]
    fn long_html_lines_are_split_between_tags() {
        let old = format!("<div>{}</div><p>old</p>", "x".repeat(200));
        let new = format!("<div>{}</div><p>new</p>", "x".repeat(200));
        let d = diff(&old, &new);
        assert!(d.contains(&Removed("<p>old</p>")), "{d:?}");
        assert!(d.contains(&Added("<p>new</p>")), "{d:?}");
        assert_eq!(d.iter().filter(|l| matches!(l, Same(_))).count(), 1);
    }
}
