-- set_max_body_bytes: writes pipeline.max_body_bytes ($1) where postpub.publish checks the
-- bodies of versions published without a recipe (0006_input_limits).
select postpub._set_max_body_bytes($1::bigint)
