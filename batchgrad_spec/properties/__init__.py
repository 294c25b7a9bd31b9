"""The chapters' property tests that other code runs too (the meta-tests), one module per room."""
