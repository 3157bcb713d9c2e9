"""What refimpl answers with: crosscheck, golden files, check-inputs, inspect, bench."""
