"""Test helpers: small catalogs and a numpy Predict server speaking TF Serving's protocol."""
