//! Colours and groupings the pictures share: the optimizer families that
//! the loss curves draw as small multiples, and a palette whose colours stay
//! apart on white (Okabe and Ito's, without its pale yellow).

use plotters::style::RGBColor;

/// Line colours, strong on white and told apart by readers with any colour
/// vision; a panel draws at most this many lines.
pub const LINES: [RGBColor; 7] = [
    RGBColor(0x00, 0x72, 0xB2), // blue
    RGBColor(0xD5, 0x5E, 0x00), // vermillion
    RGBColor(0x00, 0x9E, 0x73), // green
    RGBColor(0xCC, 0x79, 0xA7), // reddish purple
    RGBColor(0xE6, 0x9F, 0x00), // orange
    RGBColor(0x00, 0x00, 0x00), // black
    RGBColor(0x56, 0xB4, 0xE9), // sky blue
];

/// The families the pictures draw as panels, one each: a title, what the
/// demo's reader needs to know about their epochs, and the members. An
/// optimizer not listed (a new registry row) is drawn in the last panel.
pub const FAMILIES: [(&str, &str, &[&str]); 6] = [
    (
        "SGD, ASGD, Muon, Lion, LARS and LAMB",
        "",
        &["sgd", "asgd", "muon", "lion", "lars", "lamb"],
    ),
    (
        "Adam and its variants (SOAP: in Shampoo's eigenbasis)",
        "",
        &[
            "adam",
            "adamw",
            "adamax",
            "nadam",
            "radam",
            "sparseadam",
            "soap",
        ],
    ),
    (
        "Per-coordinate scalings, and Prodigy's learned step",
        "",
        &["adagrad", "adadelta", "rmsprop", "adafactor", "prodigy"],
    ),
    (
        "Rprop and LBFGS",
        ": full batch, 5 and 1 steps per epoch",
        &["rprop", "lbfgs"],
    ),
    (
        "ADOPT, AdEMAMix, Adan, Schedule-Free, Lookahead",
        "",
        &[
            "adopt",
            "ademamix",
            "adan",
            "sgdschedulefree",
            "adamwschedulefree",
            "lookahead",
        ],
    ),
    ("Others", "", &[]),
];

/// The family (index into [`FAMILIES`]) that `name` is drawn in.
pub fn family(name: &str) -> usize {
    FAMILIES
        .iter()
        .position(|(_, _, names)| names.contains(&name))
        .unwrap_or(FAMILIES.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_optimizer_has_a_family_and_each_panel_its_own_colours() {
        for name in ferroptim::optim::registry::entries().map(|e| e.name) {
            assert!(
                family(name) < FAMILIES.len() - 1,
                "{name} is in no named family"
            );
        }
        assert!(FAMILIES
            .iter()
            .all(|(_, _, names)| names.len() <= LINES.len()));
    }
}
