-- Summary increments used to overflow past the largest BIGINT, and SQLite then stored the sum as
-- REAL, which no reader decodes as a BIGINT: that user's counters could not be rebuilt (503 on
-- every call after a restart), the admin API failed on their usage and closing billing periods
-- failed for everyone. Increments now saturate at 9223372036854775807; a sum already stored as
-- REAL is set to that value. (PostgreSQL rejected such batches instead: nothing to repair there.)
UPDATE usage_summaries SET
    total_calls = CASE WHEN typeof(total_calls) = 'real' THEN 9223372036854775807 ELSE total_calls END,
    total_tokens = CASE WHEN typeof(total_tokens) = 'real' THEN 9223372036854775807 ELSE total_tokens END,
    input_tokens = CASE WHEN typeof(input_tokens) = 'real' THEN 9223372036854775807 ELSE input_tokens END,
    cached_input_tokens = CASE WHEN typeof(cached_input_tokens) = 'real' THEN 9223372036854775807 ELSE cached_input_tokens END,
    cache_creation_input_tokens = CASE WHEN typeof(cache_creation_input_tokens) = 'real' THEN 9223372036854775807 ELSE cache_creation_input_tokens END,
    output_tokens = CASE WHEN typeof(output_tokens) = 'real' THEN 9223372036854775807 ELSE output_tokens END,
    reasoning_tokens = CASE WHEN typeof(reasoning_tokens) = 'real' THEN 9223372036854775807 ELSE reasoning_tokens END,
    units = CASE WHEN typeof(units) = 'real' THEN 9223372036854775807 ELSE units END,
    total_cost_nanousd = CASE WHEN typeof(total_cost_nanousd) = 'real' THEN 9223372036854775807 ELSE total_cost_nanousd END,
    error_calls = CASE WHEN typeof(error_calls) = 'real' THEN 9223372036854775807 ELSE error_calls END,
    estimated_calls = CASE WHEN typeof(estimated_calls) = 'real' THEN 9223372036854775807 ELSE estimated_calls END,
    latency_ms_sum = CASE WHEN typeof(latency_ms_sum) = 'real' THEN 9223372036854775807 ELSE latency_ms_sum END
WHERE typeof(total_calls) = 'real'
   OR typeof(total_tokens) = 'real'
   OR typeof(input_tokens) = 'real'
   OR typeof(cached_input_tokens) = 'real'
   OR typeof(cache_creation_input_tokens) = 'real'
   OR typeof(output_tokens) = 'real'
   OR typeof(reasoning_tokens) = 'real'
   OR typeof(units) = 'real'
   OR typeof(total_cost_nanousd) = 'real'
   OR typeof(error_calls) = 'real'
   OR typeof(estimated_calls) = 'real'
   OR typeof(latency_ms_sum) = 'real';

UPDATE usage_summary_providers SET
    calls = CASE WHEN typeof(calls) = 'real' THEN 9223372036854775807 ELSE calls END,
    tokens = CASE WHEN typeof(tokens) = 'real' THEN 9223372036854775807 ELSE tokens END,
    input_tokens = CASE WHEN typeof(input_tokens) = 'real' THEN 9223372036854775807 ELSE input_tokens END,
    output_tokens = CASE WHEN typeof(output_tokens) = 'real' THEN 9223372036854775807 ELSE output_tokens END,
    units = CASE WHEN typeof(units) = 'real' THEN 9223372036854775807 ELSE units END,
    cost_nanousd = CASE WHEN typeof(cost_nanousd) = 'real' THEN 9223372036854775807 ELSE cost_nanousd END,
    error_calls = CASE WHEN typeof(error_calls) = 'real' THEN 9223372036854775807 ELSE error_calls END,
    latency_ms_sum = CASE WHEN typeof(latency_ms_sum) = 'real' THEN 9223372036854775807 ELSE latency_ms_sum END
WHERE typeof(calls) = 'real'
   OR typeof(tokens) = 'real'
   OR typeof(input_tokens) = 'real'
   OR typeof(output_tokens) = 'real'
   OR typeof(units) = 'real'
   OR typeof(cost_nanousd) = 'real'
   OR typeof(error_calls) = 'real'
   OR typeof(latency_ms_sum) = 'real';
