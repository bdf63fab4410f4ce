//! Markdown headings and the anchors GitHub gives them.

/// A heading of a Markdown document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heading {
    /// 1 for `#`, 2 for `##`, ...
    pub level: usize,
    /// The heading text.
    pub text: String,
    /// The anchor GitHub renders for it (without `#`).
    pub anchor: String,
}

/// GitHub's anchor for a heading: lower case; letters, digits, `-` and `_` kept; spaces
/// become `-`; everything else (punctuation, backticks) dropped. Duplicates are not
/// numbered here: [`headings`] reports them instead.
pub fn anchor(text: &str) -> String {
    text.trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every ATX heading outside fenced code blocks.
pub fn headings(markdown: &str) -> Vec<Heading> {
    let mut in_fence = false;
    let mut out = Vec::new();
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        let level = line.chars().take_while(|c| *c == '#').count();
        if (1..=6).contains(&level) && line[level..].starts_with(' ') {
            let text = line[level..].trim().to_owned();
            out.push(Heading {
                level,
                anchor: anchor(&text),
                text,
            });
        }
    }
    out
}

/// The contents of every fenced code block (without the fences).
pub fn code_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        let fence = line.trim_start().starts_with("```");
        match (&mut current, fence) {
            (None, true) => current = Some(String::new()),
            (Some(block), true) => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), false) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, false) => {}
        }
    }
    blocks
}

/// The body of the section under the heading with `anchor`, up to the next heading of the
/// same or a higher level.
pub fn section(markdown: &str, anchor_wanted: &str) -> Option<String> {
    let mut in_fence = false;
    let mut body: Option<(usize, String)> = None;
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            in_fence = !in_fence;
        }
        let level = line.chars().take_while(|c| *c == '#').count();
        let is_heading = !in_fence && (1..=6).contains(&level) && line[level..].starts_with(' ');
        match (&mut body, is_heading) {
            (None, true) if anchor(&line[level..]) == anchor_wanted => {
                body = Some((level, String::new()));
            }
            (Some((open, _)), true) if level <= *open => break,
            (Some((_, text)), _) => {
                text.push_str(line);
                text.push('\n');
            }
            _ => {}
        }
    }
    body.map(|(_, text)| text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_follow_github() {
        assert_eq!(
            anchor("Alert: BeamlineBreakerOpenTooLong"),
            "alert-beamlinebreakeropentoolong"
        );
        assert_eq!(anchor("5. Confirm recovery"), "5-confirm-recovery");
        assert_eq!(anchor("`min_calls` & the window"), "min_calls--the-window");
    }

    #[test]
    fn headings_in_code_fences_are_not_headings() {
        let md = "# A\n```\n# not\n```\n## B c\n";
        let got: Vec<_> = headings(md).into_iter().map(|h| h.anchor).collect();
        assert_eq!(got, ["a", "b-c"]);
    }

    #[test]
    fn section_stops_at_the_next_heading_of_its_level() {
        let md = "## One\nx\n### Sub\ny\n## Two\nz\n";
        assert_eq!(section(md, "one").as_deref(), Some("x\n### Sub\ny\n"));
    }
}
