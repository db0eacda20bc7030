-- Release: give the reservation's hold back; releasing twice, or after expiry, does nothing.
-- ARGV: id
-- Reply: 1 the hold was given back, 0 there was none.
if give_back(ARGV[1]) then
  return 1
end
return 0
