build-asan/src/daemon/main.o: src/daemon/main.c src/cli/cli.h \
 src/event/config.h src/daemon/master.h
src/cli/cli.h:
src/event/config.h:
src/daemon/master.h:
