"""Contract suites: one suite per family of plug-ins, run against every registered member."""
