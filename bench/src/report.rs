//! The figures of a run: each one printed as it is measured, then all of them as a table and as lines.

/// One measured figure.
pub(crate) struct Figure {
    pub(crate) name: String,
    pub(crate) value: f64,
    pub(crate) unit: &'static str,
    pub(crate) note: String,
}

/// Every figure of the run, in the order measured.
#[derive(Default)]
pub(crate) struct Report {
    pub(crate) figures: Vec<Figure>,
    /// Appended to the name of every figure added while it is set (`_rmq4`
    /// while the sections run again on RabbitMQ 4).
    pub(crate) suffix: String,
    /// Lines about the run itself (what was not measured, and why), printed
    /// with the figures.
    pub(crate) notes: Vec<String>,
}

impl Report {
    /// Adds `{stage}_slingshot_throughput`, `{stage}_raw_throughput` and
    /// `{stage}_ratio_vs_raw` from the rounds of each side; returns the medians.
    pub(crate) fn compare(
        &mut self,
        stage: &str,
        unit: &'static str,
        ours: (&[f64], &str),
        raw: (&[f64], &str),
        ratio_note: &str,
    ) -> (f64, f64) {
        let (ours_median, raw_median) = (median(ours.0.to_vec()), median(raw.0.to_vec()));
        self.add(format!("{stage}_slingshot_throughput"), ours_median, unit, ours.1);
        self.add(format!("{stage}_raw_throughput"), raw_median, unit, raw.1);
        self.add(
            format!("{stage}_ratio_vs_raw"),
            ours_median / raw_median,
            "ratio",
            ratio_note,
        );
        (ours_median, raw_median)
    }

    /// Adds a figure and prints it at once.
    pub(crate) fn add(&mut self, name: impl Into<String>, value: f64, unit: &'static str, note: impl Into<String>) {
        let mut name: String = name.into();
        name.push_str(&self.suffix);
        let figure = Figure {
            name,
            value,
            unit,
            note: note.into(),
        };
        eprintln!(
            "  {:<34} {:>12.3} {:<6} {}",
            figure.name, figure.value, figure.unit, figure.note
        );
        self.figures.push(figure);
    }

    /// Adds a line about the run and prints it at once.
    pub(crate) fn note(&mut self, line: impl Into<String>) {
        let line = line.into();
        eprintln!("{line}");
        self.notes.push(line);
    }

    /// Prints the notes, every figure as a Markdown table, then one
    /// `bench=<name> value=<x> unit=<u>` line each.
    pub(crate) fn print(&self) {
        if !self.notes.is_empty() {
            println!();
        }
        for line in &self.notes {
            println!("{line}");
        }
        println!("\n| figure | value | unit | note |\n|---|---:|---|---|");
        for f in &self.figures {
            println!("| {} | {:.3} | {} | {} |", f.name, f.value, f.unit, f.note);
        }
        println!();
        for f in &self.figures {
            println!("bench={} value={:.3} unit={}", f.name, f.value, f.unit);
        }
    }
}

/// The median of `values` (the upper one of an even count).
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
