build-asan/src/event/pool.o: src/event/pool.c src/event/pool.h \
 src/base/log.h
src/event/pool.h:
src/base/log.h:
