"""Scripts that train and check the bundled demo models (not product code: `discff` never imports them)."""
