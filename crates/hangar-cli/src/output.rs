//! Human tables and `--json` output.

use serde::Serialize;

pub use hangar_host::bytes::human_bytes;

pub fn json<T: Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot encode JSON: {e}"),
    }
}

/// Prints left-aligned columns separated by two spaces, like `docker ps`.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) {
    print!("{}", render_table(header, &rows));
}

fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let head: Vec<String> = header.iter().map(|h| h.to_uppercase()).collect();
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let pad = widths.get(i).copied().unwrap_or(0);
                s.push_str(&format!("{c:<pad$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&head);
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::render_table;

    #[test]
    fn table_columns_are_aligned() {
        let t = render_table(
            &["name", "state"],
            &[
                vec!["a".into(), "running".into()],
                vec!["long-name".into(), "x".into()],
            ],
        );
        assert_eq!(t, "NAME       STATE\na          running\nlong-name  x\n");
    }
}
