// rtckit browser client: see below (placeholder until written)
