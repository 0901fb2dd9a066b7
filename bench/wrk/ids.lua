-- wrk script for bench/durability.py's kill -9 scenario: post.lua's unique bodies and summary,
-- plus one line "ID <x-study-request-id>" for every 200 answer received whole (wrk calls
-- response() once the whole message has been read).
--
-- Environment: as post.lua, and BENCH_POST_LUA, the path of post.lua.

dofile(os.getenv("BENCH_POST_LUA"))

function response(status, headers, body)
  if status == 200 then
    local id = headers["x-study-request-id"]
    if id then
      io.write("ID " .. id .. "\n")
    end
  end
end
