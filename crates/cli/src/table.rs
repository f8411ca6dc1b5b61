//! Aligned columns for people: a header row (optional), cells padded to the
//! widest in their column, two spaces between columns, no trailing blanks.

use std::io::{self, Write};

/// Rows of text cells.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table whose first row is `header`.
    pub fn new(header: &[&str]) -> Self {
        let mut table = Self::default();
        table.row(header.iter().copied());
        table
    }

    /// A table without a header (key/value lines).
    pub fn plain() -> Self {
        Self::default()
    }

    /// Adds a row.
    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// Writes the rows, aligned.
    pub fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths[i] - cell.chars().count();
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up() {
        let mut table = Table::new(&["SERVICE", "READINESS"]);
        table.row(["collector", "SERVING"]);
        table.row(["api-gateway", "connection refused"]);
        table.row(["ünïcode", ""]);
        let mut out = Vec::new();
        table.write(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "SERVICE      READINESS\n\
             collector    SERVING\n\
             api-gateway  connection refused\n\
             ünïcode\n"
        );
    }
}
