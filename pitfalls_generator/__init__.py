"""Knowledge graphs, logical rules and the cases generated from them (the default dataset)."""
